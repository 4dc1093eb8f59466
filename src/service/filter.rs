//! The `filter` parameter of `projects.jobs.list`: which jobs to list.
//!
#![doc = include_str!("filter.md")]

use std::cmp::Ordering;

use chrono::{DateTime, Utc};

use crate::model::wire::parse_timestamp;
use crate::{Job, State};

/// How deep parentheses, `NOT` and `-` may nest, so that parsing, matching
/// and dropping a filter never run out of stack.
const MAX_DEPTH: usize = 100;

/// The fields, as an error message lists them.
const FIELDS: &str = "jobId, state, createTime, startTime, endTime, labels.KEY";

/// The operators, as an error message lists them.
const OPERATORS: &str = "=, !=, <, <=, >, >= or :";

/// A parsed `jobs.list` filter.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Filter {
    /// `None` for an empty filter, which matches every job.
    expr: Option<Expr>,
}

/// The longest filter, in characters.
pub(crate) const MAX_FILTER_CHARS: usize = 2048;
/// The most comparisons in a filter.
pub(crate) const MAX_FILTER_TERMS: usize = 64;
/// The most `*` wildcards in a filter's values, all together.
pub(crate) const MAX_FILTER_WILDCARDS: usize = 16;

impl Filter {
    /// Parses a filter; an empty or all-whitespace text matches every job.
    ///
    /// A filter is bounded, so that matching it against every job of a
    /// project stays cheap: at most [`MAX_FILTER_CHARS`] characters,
    /// [`MAX_FILTER_TERMS`] comparisons and [`MAX_FILTER_WILDCARDS`] `*`.
    pub(crate) fn parse(text: &str) -> Result<Filter, FilterError> {
        let length = text.chars().count();
        if length > MAX_FILTER_CHARS {
            return Err(FilterError::new(
                MAX_FILTER_CHARS,
                format!("the filter is {length} characters long; at most {MAX_FILTER_CHARS}"),
            ));
        }
        let filter = Self::parse_unbounded(text)?;
        let (mut terms, mut wildcards) = (0, 0);
        if let Some(expr) = &filter.expr {
            expr.cost(&mut terms, &mut wildcards);
        }
        if terms > MAX_FILTER_TERMS {
            return Err(FilterError::new(
                0,
                format!("the filter has {terms} comparisons; at most {MAX_FILTER_TERMS}"),
            ));
        }
        if wildcards > MAX_FILTER_WILDCARDS {
            return Err(FilterError::new(
                0,
                format!("the filter has {wildcards} wildcards (*); at most {MAX_FILTER_WILDCARDS}"),
            ));
        }
        Ok(filter)
    }

    fn parse_unbounded(text: &str) -> Result<Filter, FilterError> {
        let mut parser = Parser {
            chars: text.chars().collect(),
            pos: 0,
            depth: 0,
        };
        parser.skip_ws();
        if parser.peek().is_none() {
            return Ok(Filter { expr: None });
        }
        let expr = parser.expression()?;
        parser.skip_ws();
        match parser.peek() {
            None => Ok(Filter { expr: Some(expr) }),
            // An expression stops only at the end or at a ")".
            Some(')') => Err(unmatched_close(parser.pos)),
            Some(_) => Err(FilterError::new(
                parser.pos,
                format!(
                    "unexpected {:?}; expected AND, OR or the end of the filter",
                    parser.token_at(parser.pos)
                ),
            )),
        }
    }

    /// Whether `job` passes.
    pub(crate) fn matches(&self, job: &Job) -> bool {
        self.expr.as_ref().is_none_or(|e| e.matches(job))
    }
}

/// Where and why a filter is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} at position {position}")]
pub(crate) struct FilterError {
    /// 0-based offset, in characters (not bytes), of the offending token in the filter text
    pub(crate) position: usize,
    /// what is wrong, e.g. `expected a value after "="` or `unknown field "jobid"; expected one of jobId, state, createTime, startTime, endTime, labels.KEY`
    pub(crate) message: String,
}

impl FilterError {
    fn new(position: usize, message: impl Into<String>) -> Self {
        FilterError {
            position,
            message: message.into(),
        }
    }
}

fn unmatched_close(position: usize) -> FilterError {
    FilterError::new(position, "unmatched \")\"; expected a \"(\" before it")
}

/// A filter's syntax tree. `And` and `Or` are n-ary so that long chains stay
/// shallow; only `Not` and parentheses add depth, bounded by [`MAX_DEPTH`].
#[derive(Debug, Clone, PartialEq)]
enum Expr {
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Not(Box<Expr>),
    Test(Test),
}

impl Expr {
    fn and(parts: Vec<Expr>) -> Expr {
        Expr::join(parts, Expr::And, |e| match e {
            Expr::And(v) => Ok(v),
            other => Err(other),
        })
    }

    fn or(parts: Vec<Expr>) -> Expr {
        Expr::join(parts, Expr::Or, |e| match e {
            Expr::Or(v) => Ok(v),
            other => Err(other),
        })
    }

    /// One part as itself; several as `make(parts)`, with parts of the same
    /// kind (`split` gives their own parts) flattened into it.
    fn join(
        mut parts: Vec<Expr>,
        make: fn(Vec<Expr>) -> Expr,
        split: fn(Expr) -> Result<Vec<Expr>, Expr>,
    ) -> Expr {
        if parts.len() == 1
            && let Some(only) = parts.pop()
        {
            return only;
        }
        let mut flat = Vec::with_capacity(parts.len());
        for part in parts {
            match split(part) {
                Ok(inner) => flat.extend(inner),
                Err(other) => flat.push(other),
            }
        }
        make(flat)
    }

    /// Adds this expression's comparisons and wildcards to the counts.
    fn cost(&self, terms: &mut usize, wildcards: &mut usize) {
        match self {
            Expr::And(parts) | Expr::Or(parts) => {
                for part in parts {
                    part.cost(terms, wildcards);
                }
            }
            Expr::Not(e) => e.cost(terms, wildcards),
            Expr::Test(t) => {
                *terms += 1;
                if let Test::JobId(Text::Glob(p))
                | Test::HasLabel(Text::Glob(p))
                | Test::Label {
                    text: Text::Glob(p),
                    ..
                } = t
                {
                    *wildcards += p.matches('*').count();
                }
            }
        }
    }

    fn matches(&self, job: &Job) -> bool {
        match self {
            Expr::And(parts) => parts.iter().all(|e| e.matches(job)),
            Expr::Or(parts) => parts.iter().any(|e| e.matches(job)),
            Expr::Not(e) => !e.matches(job),
            Expr::Test(t) => t.matches(job),
        }
    }
}

/// One comparison.
#[derive(Debug, Clone, PartialEq)]
enum Test {
    JobId(Text),
    State {
        state: State,
        negated: bool,
    },
    Time(TimeField, Cmp, DateTime<Utc>),
    HasTime(TimeField),
    /// `labels:KEY`: some key passes.
    HasLabel(Text),
    Label {
        key: String,
        text: Text,
    },
}

impl Test {
    fn matches(&self, job: &Job) -> bool {
        match self {
            Test::JobId(text) => text.holds(job.job_id.as_deref()),
            Test::State { state, negated } => (job.state() == *state) != *negated,
            Test::Time(field, cmp, time) => match field.get(job) {
                Some(t) => cmp.holds(t.cmp(time)),
                None => *cmp == Cmp::Ne,
            },
            Test::HasTime(field) => field.get(job).is_some(),
            Test::HasLabel(text) => job.labels.keys().any(|k| text.holds(Some(k))),
            Test::Label { key, text } => text.holds(job.labels.get(key).map(String::as_str)),
        }
    }
}

/// A test on a text field.
#[derive(Debug, Clone, PartialEq)]
enum Text {
    Compare(Cmp, String),
    /// `:` with a `*` in the value.
    Glob(String),
}

impl Text {
    fn new(op: Op, value: String) -> Text {
        match op {
            Op::Cmp(cmp) => Text::Compare(cmp, value),
            Op::Has if value.contains('*') => Text::Glob(value),
            Op::Has => Text::Compare(Cmp::Eq, value),
        }
    }

    /// Whether `actual` passes; an absent field passes only `!=`.
    fn holds(&self, actual: Option<&str>) -> bool {
        match (self, actual) {
            (Text::Compare(cmp, _), None) => *cmp == Cmp::Ne,
            (Text::Glob(_), None) => false,
            (Text::Compare(cmp, value), Some(actual)) => cmp.holds(actual.cmp(value.as_str())),
            (Text::Glob(pattern), Some(actual)) => glob(pattern, actual),
        }
    }
}

/// Whether `text` matches `pattern`, where `*` stands for any run of
/// characters (empty too) and every other character for itself.
///
/// It works on bytes, allocating nothing per job: a literal part of the
/// pattern is whole UTF-8 characters, which can only match whole
/// characters of the text (no character starts with a continuation byte),
/// so bytes and characters give the same answer.
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    // The last `*` seen, and where in `text` its run currently ends.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some(b'*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(&c) if c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    star = Some((sp, st + 1));
                    pi = sp + 1;
                    ti = st + 1;
                }
                None => return false,
            },
        }
    }
    p[pi.min(p.len())..].iter().all(|&c| c == b'*')
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimeField {
    Create,
    Start,
    End,
}

impl TimeField {
    fn name(self) -> &'static str {
        match self {
            TimeField::Create => "createTime",
            TimeField::Start => "startTime",
            TimeField::End => "endTime",
        }
    }

    fn get(self, job: &Job) -> Option<&DateTime<Utc>> {
        match self {
            TimeField::Create => job.create_time.as_ref(),
            TimeField::Start => job.start_time.as_ref(),
            TimeField::End => job.end_time.as_ref(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Cmp {
    fn holds(self, ord: Ordering) -> bool {
        match self {
            Cmp::Eq => ord.is_eq(),
            Cmp::Ne => ord.is_ne(),
            Cmp::Lt => ord.is_lt(),
            Cmp::Le => ord.is_le(),
            Cmp::Gt => ord.is_gt(),
            Cmp::Ge => ord.is_ge(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Cmp(Cmp),
    /// `:`
    Has,
}

/// What a field name refers to.
enum Field {
    JobId,
    State,
    Time(TimeField),
    Labels,
    Label(String),
}

/// Resolves the field `name` found at character `at`.
fn field(name: &str, at: usize) -> Result<Field, FilterError> {
    const LABELS_DOT: &str = "labels.";
    Ok(match name {
        "jobId" => Field::JobId,
        "state" => Field::State,
        "createTime" => Field::Time(TimeField::Create),
        "startTime" => Field::Time(TimeField::Start),
        "endTime" => Field::Time(TimeField::End),
        "labels" => Field::Labels,
        _ => {
            let Some(key) = name.strip_prefix(LABELS_DOT) else {
                let mut message = format!("unknown field {name:?}; expected one of {FIELDS}");
                if let Some(keyword) = ["AND", "OR", "NOT"]
                    .into_iter()
                    .find(|k| k.eq_ignore_ascii_case(name))
                {
                    message.push_str(&format!(", or the keyword {keyword} in uppercase"));
                }
                return Err(FilterError::new(at, message));
            };
            let key_at = at + LABELS_DOT.chars().count();
            if key.is_empty() {
                return Err(FilterError::new(
                    key_at,
                    "expected a label key after \"labels.\"",
                ));
            }
            if !key
                .chars()
                .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
            {
                return Err(FilterError::new(
                    key_at,
                    format!("invalid label key {key:?}; expected letters, digits, \"_\" or \"-\""),
                ));
            }
            Field::Label(key.to_owned())
        }
    })
}

/// Whether `c` may be part of a bare word (a field name, keyword or value).
fn is_word_char(c: char) -> bool {
    !c.is_whitespace() && !matches!(c, '(' | ')' | '=' | '!' | '<' | '>' | ':' | '"' | '\'')
}

/// A recursive-descent parser over the filter's characters, so that every
/// position is a character offset.
struct Parser {
    chars: Vec<char>,
    pos: usize,
    /// How many parentheses, `NOT` and `-` enclose the current position.
    depth: usize,
}

impl Parser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    fn text(&self, from: usize, to: usize) -> String {
        self.chars
            .get(from..to.min(self.chars.len()))
            .unwrap_or_default()
            .iter()
            .collect()
    }

    /// Where the bare word starting at `from` ends; `time` lets it hold `:`.
    fn word_end(&self, from: usize, time: bool) -> usize {
        let mut end = from;
        while self
            .chars
            .get(end)
            .is_some_and(|&c| is_word_char(c) || (time && c == ':'))
        {
            end += 1;
        }
        end
    }

    /// The keyword that is the whole word at `at`, if any.
    fn keyword_at(&self, at: usize) -> Option<&'static str> {
        let word = self.chars.get(at..self.word_end(at, false))?;
        ["AND", "OR", "NOT"]
            .into_iter()
            .find(|k| word.iter().copied().eq(k.chars()))
    }

    /// The operator at `at` and its length in characters, longest first.
    fn op_at(&self, at: usize) -> Option<(Op, usize)> {
        let next = self.chars.get(at + 1).copied();
        Some(match (self.chars.get(at).copied()?, next) {
            ('<', Some('=')) => (Op::Cmp(Cmp::Le), 2),
            ('>', Some('=')) => (Op::Cmp(Cmp::Ge), 2),
            ('!', Some('=')) => (Op::Cmp(Cmp::Ne), 2),
            ('<', _) => (Op::Cmp(Cmp::Lt), 1),
            ('>', _) => (Op::Cmp(Cmp::Gt), 1),
            ('=', _) => (Op::Cmp(Cmp::Eq), 1),
            (':', _) => (Op::Has, 1),
            _ => return None,
        })
    }

    /// The token at `at`, to quote in a message.
    fn token_at(&self, at: usize) -> String {
        match self.chars.get(at) {
            None => String::new(),
            Some(&c) if is_word_char(c) => self.text(at, self.word_end(at, false)),
            Some(&c) => match self.op_at(at) {
                Some((_, len)) => self.text(at, at + len),
                None => c.to_string(),
            },
        }
    }

    /// Runs `parse` one level deeper, refusing to go past [`MAX_DEPTH`]; `at`
    /// is the `(`, `NOT` or `-` that opens the level.
    fn nested(
        &mut self,
        at: usize,
        parse: impl FnOnce(&mut Self) -> Result<Expr, FilterError>,
    ) -> Result<Expr, FilterError> {
        if self.depth >= MAX_DEPTH {
            return Err(FilterError::new(
                at,
                format!(
                    "filter nested too deeply; expected at most {MAX_DEPTH} levels of parentheses, NOT and \"-\""
                ),
            ));
        }
        self.depth += 1;
        let result = parse(self);
        self.depth -= 1;
        result
    }

    /// After the keyword or `-` `after` at `at`: fails unless something that
    /// can start a term follows.
    fn expect_operand(&mut self, after: &str, at: usize) -> Result<(), FilterError> {
        self.skip_ws();
        let missing = match self.peek() {
            None | Some(')') => true,
            Some(_) => matches!(self.keyword_at(self.pos), Some("AND" | "OR")),
        };
        if missing {
            return Err(FilterError::new(
                at,
                format!("expected a filter after {after:?}"),
            ));
        }
        Ok(())
    }

    /// `expression = sequence { "AND" sequence }`
    fn expression(&mut self) -> Result<Expr, FilterError> {
        let mut parts = vec![self.sequence()?];
        loop {
            self.skip_ws();
            let at = self.pos;
            if self.keyword_at(at) != Some("AND") {
                return Ok(Expr::and(parts));
            }
            self.pos += "AND".len();
            self.expect_operand("AND", at)?;
            parts.push(self.sequence()?);
        }
    }

    /// `sequence = factor { factor }`
    fn sequence(&mut self) -> Result<Expr, FilterError> {
        let mut parts = vec![self.factor()?];
        loop {
            self.skip_ws();
            if matches!(self.peek(), None | Some(')')) || self.keyword_at(self.pos) == Some("AND") {
                return Ok(Expr::and(parts));
            }
            parts.push(self.factor()?);
        }
    }

    /// `factor = term { "OR" term }`
    fn factor(&mut self) -> Result<Expr, FilterError> {
        let mut parts = vec![self.term()?];
        loop {
            self.skip_ws();
            let at = self.pos;
            if self.keyword_at(at) != Some("OR") {
                return Ok(Expr::or(parts));
            }
            self.pos += "OR".len();
            self.expect_operand("OR", at)?;
            parts.push(self.term()?);
        }
    }

    /// `term = { "NOT" | "-" } simple`
    fn term(&mut self) -> Result<Expr, FilterError> {
        let at = self.pos;
        match self.peek() {
            None => Err(FilterError::new(at, "expected a filter")),
            Some('(') => self.group(),
            Some(')') => Err(unmatched_close(at)),
            Some('-') => {
                self.pos += 1;
                if self.peek().is_none_or(|c| c.is_whitespace() || c == ')') {
                    return Err(FilterError::new(
                        at,
                        "expected a field or \"(\" right after \"-\"",
                    ));
                }
                let inner = self.nested(at, Self::term)?;
                Ok(Expr::Not(Box::new(inner)))
            }
            Some(c) if is_word_char(c) => match self.keyword_at(at) {
                Some("NOT") => {
                    self.pos += "NOT".len();
                    self.expect_operand("NOT", at)?;
                    let inner = self.nested(at, Self::term)?;
                    Ok(Expr::Not(Box::new(inner)))
                }
                Some(keyword) => Err(FilterError::new(
                    at,
                    format!("expected a filter before {keyword:?}"),
                )),
                None => self.restriction(),
            },
            Some(_) => Err(FilterError::new(
                at,
                format!(
                    "unexpected {:?}; expected a field, \"(\", NOT or \"-\"",
                    self.token_at(at)
                ),
            )),
        }
    }

    /// `"(" expression ")"`, at a `(`.
    fn group(&mut self) -> Result<Expr, FilterError> {
        let open = self.pos;
        let unclosed = || FilterError::new(open, "unclosed \"(\"; expected a matching \")\"");
        self.pos += 1;
        self.skip_ws();
        match self.peek() {
            None => return Err(unclosed()),
            Some(')') => {
                return Err(FilterError::new(
                    open,
                    "empty parentheses; expected a filter between \"(\" and \")\"",
                ));
            }
            Some(_) => {}
        }
        let expr = self.nested(open, Self::expression)?;
        self.skip_ws();
        if self.peek() != Some(')') {
            return Err(unclosed());
        }
        self.pos += 1;
        Ok(expr)
    }

    /// `field operator value`, at a word that is not a keyword.
    fn restriction(&mut self) -> Result<Expr, FilterError> {
        let field_at = self.pos;
        let end = self.word_end(field_at, false);
        let name = self.text(field_at, end);
        self.pos = end;
        let field = field(&name, field_at)?;

        self.skip_ws();
        let op_at = self.pos;
        let Some((op, op_len)) = self.op_at(op_at) else {
            return Err(FilterError::new(
                op_at,
                format!("expected an operator ({OPERATORS}) after {name:?}"),
            ));
        };
        let op_text = self.text(op_at, op_at + op_len);
        self.pos += op_len;

        self.skip_ws();
        let value_at = self.pos;
        let value = self.value(&op_text, matches!(field, Field::Time(_)))?;
        let test = test(field, op, &op_text, op_at, value, value_at)?;

        match self.peek() {
            None | Some(')') => {}
            Some(c) if c.is_whitespace() => {}
            Some(_) => {
                return Err(FilterError::new(
                    self.pos,
                    format!(
                        "unexpected {:?} after the value; expected a space, \")\" or the end of the filter",
                        self.token_at(self.pos)
                    ),
                ));
            }
        }
        Ok(Expr::Test(test))
    }

    /// A bare word or a quoted string, after the operator `op`.
    fn value(&mut self, op: &str, time: bool) -> Result<String, FilterError> {
        let at = self.pos;
        if let Some(quote @ ('"' | '\'')) = self.peek() {
            return self.quoted(quote);
        }
        let end = self.word_end(at, time);
        let word = self.text(at, end);
        if word.is_empty() {
            return Err(FilterError::new(
                at,
                format!("expected a value after {op:?}"),
            ));
        }
        if matches!(word.as_str(), "AND" | "OR" | "NOT") {
            return Err(FilterError::new(
                at,
                format!(
                    "expected a value after {op:?}, not the keyword {word}; quote it to use it as a value"
                ),
            ));
        }
        self.pos = end;
        Ok(word)
    }

    /// A string in `quote`s, at its opening quote.
    fn quoted(&mut self, quote: char) -> Result<String, FilterError> {
        let open = self.pos;
        let unterminated = || {
            FilterError::new(
                open,
                format!(
                    "unterminated string; expected a closing {quote} before the end of the filter"
                ),
            )
        };
        self.pos += 1;
        let mut value = String::new();
        loop {
            let Some(c) = self.peek() else {
                return Err(unterminated());
            };
            self.pos += 1;
            if c == quote {
                return Ok(value);
            }
            if c != '\\' {
                value.push(c);
                continue;
            }
            match self.peek() {
                None => return Err(unterminated()),
                Some(escaped @ ('"' | '\'' | '\\')) => {
                    value.push(escaped);
                    self.pos += 1;
                }
                Some(other) => {
                    return Err(FilterError::new(
                        self.pos - 1,
                        format!(
                            "unknown escape \"\\{other}\" in a string; expected \\\", \\' or \\\\"
                        ),
                    ));
                }
            }
        }
    }
}

/// The comparison `field op value`; `op_at` and `value_at` are where the
/// operator and value start.
fn test(
    field: Field,
    op: Op,
    op_text: &str,
    op_at: usize,
    value: String,
    value_at: usize,
) -> Result<Test, FilterError> {
    Ok(match field {
        Field::JobId => Test::JobId(Text::new(op, value)),
        Field::Label(key) => Test::Label {
            key,
            text: Text::new(op, value),
        },
        Field::Labels => match op {
            Op::Has => Test::HasLabel(Text::new(op, value)),
            Op::Cmp(_) => {
                return Err(FilterError::new(
                    op_at,
                    format!(
                        "labels supports only \":\" (labels:KEY), not {op_text:?}; compare a label's value with labels.KEY{op_text}VALUE"
                    ),
                ));
            }
        },
        Field::State => {
            let negated = match op {
                Op::Cmp(Cmp::Eq) | Op::Has => false,
                Op::Cmp(Cmp::Ne) => true,
                Op::Cmp(_) => {
                    return Err(FilterError::new(
                        op_at,
                        format!("state supports only =, != and :, not {op_text:?}"),
                    ));
                }
            };
            let Some(&state) = State::ALL.iter().find(|s| s.as_str() == value) else {
                let names: Vec<&str> = State::ALL.iter().map(|s| s.as_str()).collect();
                return Err(FilterError::new(
                    value_at,
                    format!(
                        "unknown state {value:?}; expected one of {}",
                        names.join(", ")
                    ),
                ));
            };
            Test::State { state, negated }
        }
        Field::Time(time_field) => match op {
            Op::Has if value == "*" => Test::HasTime(time_field),
            Op::Has => {
                let name = time_field.name();
                return Err(FilterError::new(
                    value_at,
                    format!(
                        "expected \"*\" after \"{name}:\", not {value:?}; compare times with =, !=, <, <=, > or >="
                    ),
                ));
            }
            Op::Cmp(cmp) => {
                let time = parse_timestamp(&value).map_err(|why| {
                    FilterError::new(value_at, format!("invalid time {value:?}; {why}"))
                })?;
                Test::Time(time_field, cmp, time)
            }
        },
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn time(s: &str) -> Option<DateTime<Utc>> {
        Some(s.parse().expect("a test time"))
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Six jobs, referred to by index in the tables.
    fn jobs() -> Vec<Job> {
        vec![
            // 0
            Job {
                job_id: Some("census_batch_1".into()),
                state: Some(State::Succeeded),
                create_time: time("2021-05-17T10:00:00Z"),
                start_time: time("2021-05-17T10:05:00Z"),
                end_time: time("2021-05-17T11:00:00Z"),
                labels: labels(&[("team", "engineering"), ("env", "prod")]),
                ..Job::default()
            },
            // 1
            Job {
                job_id: Some("census_batch_2".into()),
                state: Some(State::Running),
                create_time: time("2021-05-18T09:00:00Z"),
                start_time: time("2021-05-18T09:01:00Z"),
                labels: labels(&[("team", "research"), ("env", "dev"), ("owner", "zoë")]),
                ..Job::default()
            },
            // 2
            Job {
                job_id: Some("flowers_1".into()),
                state: Some(State::Failed),
                create_time: time("2021-05-19T08:00:00Z"),
                start_time: time("2021-05-19T08:10:00Z"),
                end_time: time("2021-05-19T08:20:00Z"),
                labels: labels(&[
                    ("team", "data science"),
                    ("note", "say \"hi\""),
                    ("équipe", "café"),
                ]),
                ..Job::default()
            },
            // 3
            Job {
                job_id: Some("flowers_2".into()),
                state: Some(State::Queued),
                create_time: time("2021-05-20T00:00:00Z"),
                ..Job::default()
            },
            // 4: nothing set
            Job::default(),
            // 5
            Job {
                job_id: Some("census_test".into()),
                state: Some(State::Cancelled),
                create_time: time("2021-05-18T00:00:00Z"),
                start_time: time("2021-05-18T00:00:01Z"),
                end_time: time("2021-05-18T01:00:00Z"),
                labels: labels(&[("path", "a\\b"), ("env", "prod")]),
                ..Job::default()
            },
        ]
    }

    fn matching(filter: &Filter, jobs: &[Job]) -> Vec<usize> {
        (0..jobs.len())
            .filter(|&i| filter.matches(&jobs[i]))
            .collect()
    }

    #[test]
    fn filters_select_jobs() {
        const ALL: &[usize] = &[0, 1, 2, 3, 4, 5];
        let table: &[(&str, &[usize])] = &[
            ("", ALL),
            (" \t\n ", ALL),
            // jobId
            ("jobId=census_batch_1", &[0]),
            ("jobId = census_batch_1", &[0]),
            ("  jobId= census_batch_1  ", &[0]),
            ("jobId=Census_batch_1", &[]),
            ("jobId!=census_batch_1", &[1, 2, 3, 4, 5]),
            ("jobId:census*", &[0, 1, 5]),
            ("jobId:*_1", &[0, 2]),
            ("jobId:c*s*1", &[0]),
            ("jobId:*", &[0, 1, 2, 3, 5]),
            ("jobId:census", &[]),
            ("jobId:flowers_2", &[3]),
            ("jobId:\"flowers*\"", &[2, 3]),
            ("jobId<d", &[0, 1, 5]),
            ("jobId<=census_batch_2", &[0, 1]),
            ("jobId>census_batch_2", &[2, 3, 5]),
            ("jobId>=flowers_1", &[2, 3]),
            // state
            ("state=RUNNING", &[1]),
            ("state:FAILED", &[2]),
            ("state!=RUNNING", &[0, 2, 3, 4, 5]),
            ("state=\"QUEUED\"", &[3]),
            ("state='CANCELLED'", &[5]),
            ("state=STATE_UNSPECIFIED", &[4]),
            // times
            ("createTime>\"2021-05-18T00:00:00Z\"", &[1, 2, 3]),
            ("createTime>=2021-05-18T00:00:00Z", &[1, 2, 3, 5]),
            ("createTime < 2021-05-18T00:00:00Z", &[0]),
            ("createTime<=2021-05-18T02:00:00+02:00", &[0, 5]),
            ("createTime=2021-05-18T00:00:00Z", &[5]),
            ("createTime!=2021-05-18T00:00:00Z", &[0, 1, 2, 3, 4]),
            ("startTime>=2021-05-18T00:00:00.5Z", &[1, 2, 5]),
            ("startTime:*", &[0, 1, 2, 5]),
            ("endTime:*", &[0, 2, 5]),
            ("endTime<2021-05-19T00:00:00Z", &[0, 5]),
            ("endTime!=2021-05-17T11:00:00Z", &[1, 2, 3, 4, 5]),
            ("(endTime>2021-05-18T00:00:00Z)", &[2, 5]),
            // labels.KEY
            ("labels.team=engineering", &[0]),
            ("labels.team!=engineering", &[1, 2, 3, 4, 5]),
            ("labels.team:*", &[0, 1, 2]),
            ("labels.team:eng*", &[0]),
            ("labels.team:*ea*", &[1]),
            ("labels.team:engineering", &[0]),
            ("labels.team<f", &[0, 2]),
            ("labels.team<=engineering", &[0, 2]),
            ("labels.team>engineering", &[1]),
            ("labels.team>=research", &[1]),
            ("labels.team=\"data science\"", &[2]),
            ("labels.note=\"say \\\"hi\\\"\"", &[2]),
            ("labels.note='say \"hi\"'", &[2]),
            ("labels.note='say \\\"hi\\\"'", &[2]),
            ("labels.path=\"a\\\\b\"", &[5]),
            ("labels.path=a\\b", &[5]),
            ("labels.owner=zoë", &[1]),
            ("labels.équipe=café", &[2]),
            ("labels.équipe:caf*", &[2]),
            ("labels.team=\"AND\"", &[]),
            // labels:KEY
            ("labels:owner", &[1]),
            ("labels:*", &[0, 1, 2, 5]),
            ("-labels:*", &[3, 4]),
            ("labels:e*", &[0, 1, 5]),
            ("labels:équipe", &[2]),
            // precedence: OR binds tighter than AND
            ("state=SUCCEEDED AND state=RUNNING OR labels.env=prod", &[0]),
            ("labels.env=prod OR state=RUNNING AND state=SUCCEEDED", &[0]),
            (
                "(state=SUCCEEDED AND state=RUNNING) OR labels.env=prod",
                &[0, 5],
            ),
            // implicit AND, which also binds looser than OR
            ("jobId:census* labels.env=prod", &[0, 5]),
            ("jobId:census* state=RUNNING OR state=CANCELLED", &[1, 5]),
            ("jobId:census* labels.env=prod AND state=CANCELLED", &[5]),
            ("(jobId:flowers*)(state=FAILED)", &[2]),
            ("state=FAILED\tOR\nstate=QUEUED", &[2, 3]),
            // NOT and -
            ("NOT state=RUNNING", &[0, 2, 3, 4, 5]),
            ("-state=RUNNING", &[0, 2, 3, 4, 5]),
            ("NOT NOT state=RUNNING", &[1]),
            ("--state=RUNNING", &[1]),
            ("NOT state=RUNNING OR state=RUNNING", ALL),
            ("NOT (state=RUNNING OR state=FAILED)", &[0, 3, 4, 5]),
            ("NOT(state=RUNNING)", &[0, 2, 3, 4, 5]),
            ("-(labels.env=prod OR labels:owner)", &[2, 3, 4]),
            ("jobId:* -endTime:*", &[1, 3]),
            // parentheses
            ("((jobId:flowers*) AND (NOT (state=QUEUED)))", &[2]),
            ("( state=RUNNING )", &[1]),
        ];
        let jobs = jobs();
        for (text, expected) in table {
            let filter =
                Filter::parse(text).unwrap_or_else(|e| panic!("{text:?} should parse, got: {e}"));
            assert_eq!(matching(&filter, &jobs), *expected, "filter {text:?}");
        }
    }

    #[test]
    fn implicit_and_is_and() {
        assert_eq!(
            Filter::parse("jobId:c* state=RUNNING labels:x"),
            Filter::parse("jobId:c* AND state=RUNNING AND labels:x")
        );
        assert_ne!(
            Filter::parse("jobId:c* state=RUNNING"),
            Filter::parse("jobId:c* OR state=RUNNING")
        );
    }

    #[test]
    fn bad_filters_are_refused_with_position_and_message() {
        let states = "STATE_UNSPECIFIED, QUEUED, PREPARING, RUNNING, SUCCEEDED, FAILED, CANCELLING, CANCELLED";
        let unknown_state = format!("unknown state \"DONE\"; expected one of {states}");
        let unknown_field = |f: &str| format!("unknown field {f:?}; expected one of {FIELDS}");
        let jobid = unknown_field("jobid");
        let and_lower = format!("{}, or the keyword AND in uppercase", unknown_field("and"));
        let no_op = "expected an operator (=, !=, <, <=, >, >= or :) after \"jobId\"";
        let unclosed = "unclosed \"(\"; expected a matching \")\"";
        let unmatched = "unmatched \")\"; expected a \"(\" before it";
        let empty = "empty parentheses; expected a filter between \"(\" and \")\"";
        let minus = "expected a field or \"(\" right after \"-\"";
        let bad_time = "invalid time \"2021-13-01T00:00:00Z\"; expected RFC 3339 such as \"2014-10-02T15:01:23.045123456Z\"";
        let after_value = |t: &str| {
            format!(
                "unexpected {t:?} after the value; expected a space, \")\" or the end of the filter"
            )
        };
        let after_b = after_value("b");
        let after_eq = after_value("=");
        let after_colon = after_value(":");
        let after_paren = after_value("(");
        let after_quote = after_value("'");
        let deep =
            "filter nested too deeply; expected at most 100 levels of parentheses, NOT and \"-\"";
        let deep_parens = format!("{}state=FAILED", "(".repeat(150));
        let deep_not = format!("{}state=FAILED", "NOT ".repeat(150));
        let deep_minus = format!("{}state=FAILED", "-".repeat(150));
        let ok_parens = format!("{}state=FAILED{}", "(".repeat(100), ")".repeat(99));

        let table: Vec<(&str, usize, &str)> = vec![
            // parentheses
            ("(", 0, unclosed),
            ("(state=FAILED", 0, unclosed),
            ("state=RUNNING OR (state=FAILED", 17, unclosed),
            ("((state=FAILED)", 0, unclosed),
            (&ok_parens, 0, unclosed),
            ("state=FAILED)", 12, unmatched),
            (")", 0, unmatched),
            ("(state=FAILED))", 14, unmatched),
            ("()", 0, empty),
            ("state=FAILED ( )", 13, empty),
            // dangling and misplaced keywords
            ("state=FAILED AND", 13, "expected a filter after \"AND\""),
            ("state=FAILED OR", 13, "expected a filter after \"OR\""),
            ("state=FAILED AND  ", 13, "expected a filter after \"AND\""),
            ("(state=FAILED OR)", 14, "expected a filter after \"OR\""),
            (
                "state=FAILED AND OR state=QUEUED",
                13,
                "expected a filter after \"AND\"",
            ),
            ("NOT", 0, "expected a filter after \"NOT\""),
            ("state=FAILED NOT", 13, "expected a filter after \"NOT\""),
            ("NOT AND state=FAILED", 0, "expected a filter after \"NOT\""),
            ("AND state=FAILED", 0, "expected a filter before \"AND\""),
            ("(OR state=FAILED)", 1, "expected a filter before \"OR\""),
            ("state=FAILED -", 13, minus),
            ("- state=FAILED", 0, minus),
            ("(-)", 1, minus),
            // missing value
            ("jobId=", 6, "expected a value after \"=\""),
            ("jobId!= ", 8, "expected a value after \"!=\""),
            ("jobId=)", 6, "expected a value after \"=\""),
            ("jobId==x", 6, "expected a value after \"=\""),
            ("createTime>=", 12, "expected a value after \">=\""),
            ("labels:", 7, "expected a value after \":\""),
            (
                "jobId>= AND state=FAILED",
                8,
                "expected a value after \">=\", not the keyword AND; quote it to use it as a value",
            ),
            // missing operator
            ("jobId", 5, no_op),
            ("jobId census", 6, no_op),
            ("jobId!x", 5, no_op),
            ("jobId (x)", 6, no_op),
            // fields
            ("jobid=x", 0, &jobid),
            ("state=FAILED and jobId=x", 13, &and_lower),
            ("labels.=x", 7, "expected a label key after \"labels.\""),
            (
                "labels.a*b=x",
                7,
                "invalid label key \"a*b\"; expected letters, digits, \"_\" or \"-\"",
            ),
            (
                "\"jobId\"=x",
                0,
                "unexpected \"\\\"\"; expected a field, \"(\", NOT or \"-\"",
            ),
            (
                "state=FAILED >=x",
                13,
                "unexpected \">=\"; expected a field, \"(\", NOT or \"-\"",
            ),
            // state
            ("state=DONE", 6, &unknown_state),
            ("state = 'DONE'", 8, &unknown_state),
            (
                "state<RUNNING",
                5,
                "state supports only =, != and :, not \"<\"",
            ),
            (
                "state >= RUNNING",
                6,
                "state supports only =, != and :, not \">=\"",
            ),
            // labels alone
            (
                "labels=x",
                6,
                "labels supports only \":\" (labels:KEY), not \"=\"; compare a label's value with labels.KEY=VALUE",
            ),
            // times
            ("createTime>2021-13-01T00:00:00Z", 11, bad_time),
            ("endTime < \"2021-13-01T00:00:00Z\"", 10, bad_time),
            (
                "startTime=2021-05-18",
                10,
                "invalid time \"2021-05-18\"; expected RFC 3339 such as \"2014-10-02T15:01:23.045123456Z\"",
            ),
            (
                "createTime:2021-05-18T00:00:00Z",
                11,
                "expected \"*\" after \"createTime:\", not \"2021-05-18T00:00:00Z\"; compare times with =, !=, <, <=, > or >=",
            ),
            // strings
            (
                "jobId=\"census",
                6,
                "unterminated string; expected a closing \" before the end of the filter",
            ),
            (
                "jobId='census",
                6,
                "unterminated string; expected a closing ' before the end of the filter",
            ),
            (
                "jobId=\"a\\\"",
                6,
                "unterminated string; expected a closing \" before the end of the filter",
            ),
            (
                "jobId=\"a\\",
                6,
                "unterminated string; expected a closing \" before the end of the filter",
            ),
            (
                "jobId=\"a\\n\"",
                8,
                "unknown escape \"\\n\" in a string; expected \\\", \\' or \\\\",
            ),
            // trailing garbage after a value
            ("jobId=\"a\"b", 9, &after_b),
            ("jobId=a=b", 7, &after_eq),
            ("jobId=a:b", 7, &after_colon),
            ("createTime>2021-05-18T00:00:00Z(", 31, &after_paren),
            ("labels.x='a''b'", 12, &after_quote),
            // positions count characters, not bytes
            ("labels.équipe=café AND jobid=x", 23, &jobid),
            ("labels.owner=zoë )", 17, unmatched),
            (
                "labels.équipe=\"café",
                14,
                "unterminated string; expected a closing \" before the end of the filter",
            ),
            ("jobId=ééé state=DONE", 16, &unknown_state),
            // nesting is bounded
            (&deep_parens, 100, deep),
            (&deep_not, 400, deep),
            (&deep_minus, 100, deep),
        ];
        for (text, position, message) in table {
            let err = Filter::parse(text).expect_err(text);
            assert_eq!(
                (err.position, err.message.as_str()),
                (position, message),
                "filter {text:?}"
            );
            assert_eq!(err.to_string(), format!("{message} at position {position}"));
        }
    }

    #[test]
    fn nesting_up_to_the_limit_parses_and_long_chains_stay_shallow() {
        let deepest = format!("{}state=FAILED{}", "(".repeat(100), ")".repeat(100));
        let jobs = jobs();
        assert_eq!(matching(&Filter::parse(&deepest).unwrap(), &jobs), [2]);
        let not100 = format!("{}state=FAILED", "NOT ".repeat(100));
        assert_eq!(matching(&Filter::parse(&not100).unwrap(), &jobs), [2]);

        // Long flat chains are n-ary nodes, not deep trees (the parser
        // alone: `parse` refuses filters this long).
        let ors = vec!["state=FAILED"; 100_000].join(" OR ");
        assert_eq!(
            matching(&Filter::parse_unbounded(&ors).unwrap(), &jobs),
            [2]
        );
        let ands = vec!["jobId:*"; 100_000].join(" AND ");
        assert_eq!(
            matching(&Filter::parse_unbounded(&ands).unwrap(), &jobs),
            [0, 1, 2, 3, 5]
        );
        let implicit = vec!["jobId:*"; 100_000].join(" ");
        assert_eq!(
            matching(&Filter::parse_unbounded(&implicit).unwrap(), &jobs),
            [0, 1, 2, 3, 5]
        );
        assert!(Filter::parse(&ors).is_err());
    }

    #[test]
    fn glob_matches_runs() {
        let table = [
            ("*", "", true),
            ("*", "abc", true),
            ("", "", true),
            ("", "a", false),
            ("a*", "abc", true),
            ("a*", "bac", false),
            ("*c", "abc", true),
            ("*b*", "abc", true),
            ("a*c", "ac", true),
            ("a*c", "abcbc", true),
            ("a*c", "abcb", false),
            ("a**c", "abc", true),
            ("*a*b*", "xxaxxbxx", true),
            ("*a*b*", "xxbxxaxx", false),
            ("é*é", "éxé", true),
            // Multi-byte characters: bytes and characters agree.
            ("*é", "aé", true),
            ("*é", "aè", false),
            ("日*語", "日本語", true),
            ("日*語", "日本", false),
            ("*本*", "日本語", true),
            ("?", "é", false),
            ("abc", "abc", true),
            ("abc", "abd", false),
            ("a?c", "abc", false),
            ("a?c", "a?c", true),
            ("a.c", "abc", false),
        ];
        for (pattern, text, expected) in table {
            assert_eq!(glob(pattern, text), expected, "{pattern:?} on {text:?}");
        }
    }

    /// Every string of up to five tokens from a small alphabet: parsing never
    /// panics, errors point inside the text, and leading whitespace shifts
    /// positions without changing the outcome.
    #[test]
    fn parse_never_panics_on_token_soup() {
        const TOKENS: &[&str] = &[
            " ",
            "(",
            ")",
            "-",
            "\"",
            "\\",
            "=",
            ":",
            "<=",
            "AND",
            "OR",
            "NOT",
            "jobId",
            "labels.é",
            "createTime",
            "2021-05-18T00:00:00Z",
        ];
        let jobs = jobs();
        let (mut parsed, mut refused) = (0usize, 0usize);
        let mut indices: Vec<usize> = Vec::new();
        loop {
            let text: String = indices.iter().map(|&i| TOKENS[i]).collect();
            check(&text, &jobs, &mut parsed, &mut refused);
            // Next combination, odometer-style, growing up to 5 tokens.
            let mut i = 0;
            loop {
                if i == indices.len() {
                    indices.push(0);
                    break;
                }
                indices[i] += 1;
                if indices[i] < TOKENS.len() {
                    break;
                }
                indices[i] = 0;
                i += 1;
            }
            if indices.len() > 5 {
                break;
            }
        }
        let total: usize = (0..=5).map(|n| TOKENS.len().pow(n)).sum();
        assert_eq!(parsed + refused, total);
        assert!(parsed > 1000, "only {parsed} parsed");
        assert!(refused > 1000, "only {refused} refused");
    }

    /// Pseudo-random strings over characters that include every special one
    /// and multi-byte ones.
    #[test]
    fn parse_never_panics_on_random_text() {
        const CHARS: &[char] = &[
            ' ', '\t', '(', ')', '-', '"', '\'', '\\', '=', '!', '<', '>', ':', '*', '.', 'A', 'N',
            'D', 'O', 'R', 'T', 'a', 'é', '日', '🦀', '0',
        ];
        let jobs = jobs();
        let (mut parsed, mut refused) = (0usize, 0usize);
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) as usize
        };
        for _ in 0..50_000 {
            let len = next() % 24;
            let text: String = (0..len).map(|_| CHARS[next() % CHARS.len()]).collect();
            check(&text, &jobs, &mut parsed, &mut refused);
        }
        assert!(
            refused > 0 && parsed > 0,
            "{parsed} parsed, {refused} refused"
        );
    }

    fn check(text: &str, jobs: &[Job], parsed: &mut usize, refused: &mut usize) {
        let result = Filter::parse(text);
        let shifted = Filter::parse(&format!(" {text}"));
        match (&result, &shifted) {
            (Ok(filter), Ok(again)) => {
                assert_eq!(filter, again, "{text:?}");
                for job in jobs {
                    let _ = filter.matches(job);
                }
                *parsed += 1;
            }
            (Err(e), Err(again)) => {
                assert!(
                    e.position <= text.chars().count(),
                    "{text:?}: position {} past the end",
                    e.position
                );
                assert!(!e.message.is_empty(), "{text:?}");
                assert_eq!(
                    (again.position, &again.message),
                    (e.position + 1, &e.message),
                    "{text:?}"
                );
                *refused += 1;
            }
            _ => panic!("{text:?} gave {result:?} but with a leading space {shifted:?}"),
        }
    }
}
