//! Cloud Storage wildcards, compiled to a regular expression.
//!
//! - `*` matches any run of characters within one path segment (not `/`);
//! - `**` matches any run of characters across segments; `/**/` also matches
//!   a single `/`, so `a/**/b` matches `a/b`, `a/x/b` and `a/x/y/b`;
//! - `?` matches one character other than `/`;
//! - `[abc]`, `[a-z]` match one character of the class; `[!a-z]` or `[^a-z]`
//!   one character (other than `/`) outside it.
//!
//! Everything else matches itself. A pattern with none of `*`, `?`, `[` is a
//! plain location.

use regex::Regex;

/// A compiled wildcard pattern.
#[derive(Debug, Clone)]
pub(crate) struct Pattern {
    regex: Regex,
    prefix_len: usize,
}

/// Whether `s` holds a wildcard character.
pub(crate) fn has_wildcard(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

impl Pattern {
    /// Compiles `pattern`.
    ///
    /// # Errors
    /// A message when a `[` class is not closed or is empty.
    pub(crate) fn new(pattern: &str) -> Result<Pattern, String> {
        let chars: Vec<char> = pattern.chars().collect();
        let mut re = String::with_capacity(pattern.len() * 2 + 2);
        re.push('^');
        let mut i = 0;
        while i < chars.len() {
            match chars[i] {
                '*' if chars.get(i + 1) == Some(&'*') => {
                    let after_slash = i > 0 && chars[i - 1] == '/';
                    if after_slash && chars.get(i + 2) == Some(&'/') {
                        // `/**/`: the `/` before is already written; zero or more segments.
                        re.push_str("(?:.*/)?");
                        i += 3;
                    } else {
                        re.push_str(".*");
                        i += 2;
                    }
                    continue;
                }
                '*' => re.push_str("[^/]*"),
                '?' => re.push_str("[^/]"),
                '[' => {
                    let (class, end) = class(&chars, i)?;
                    re.push_str(&class);
                    i = end;
                    continue;
                }
                c => re.push_str(&regex::escape(c.encode_utf8(&mut [0u8; 4]))),
            }
            i += 1;
        }
        re.push('$');
        let regex = Regex::new(&re).map_err(|e| format!("cannot compile: {e}"))?;
        let prefix_len = pattern.find(['*', '?', '[']).unwrap_or(pattern.len());
        Ok(Pattern { regex, prefix_len })
    }

    /// Whether `location` matches the whole pattern.
    pub(crate) fn matches(&self, location: &str) -> bool {
        self.regex.is_match(location)
    }

    /// The literal part before the first wildcard: every match starts with it.
    pub(crate) fn literal_prefix<'a>(&self, pattern: &'a str) -> &'a str {
        &pattern[..self.prefix_len]
    }
}

/// Compiles the class starting at `chars[start] == '['`; returns the regex
/// and the index after the closing `]`.
fn class(chars: &[char], start: usize) -> Result<(String, usize), String> {
    let mut i = start + 1;
    let negated = matches!(chars.get(i), Some('!' | '^'));
    if negated {
        i += 1;
    }
    let mut items: Vec<(char, char)> = Vec::new();
    let mut first = true;
    loop {
        let Some(&c) = chars.get(i) else {
            return Err(format!("unclosed '[' at character {start}"));
        };
        if c == ']' && !first {
            i += 1;
            break;
        }
        first = false;
        if chars.get(i + 1) == Some(&'-') && chars.get(i + 2).is_some_and(|&e| e != ']') {
            let end = chars[i + 2];
            if end < c {
                return Err(format!("reversed range '{c}-{end}' at character {i}"));
            }
            items.push((c, end));
            i += 3;
        } else {
            items.push((c, c));
            i += 1;
        }
    }
    let mut re = String::from(if negated { "[^/" } else { "[" });
    for (a, b) in items {
        if a == b {
            re.push_str(&format!("\\x{{{:X}}}", a as u32));
        } else {
            re.push_str(&format!("\\x{{{:X}}}-\\x{{{:X}}}", a as u32, b as u32));
        }
    }
    re.push(']');
    Ok((re, i))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching_table() {
        // (pattern, location, matches)
        let cases = [
            ("gs://b/in/*", "gs://b/in/a.json", true),
            ("gs://b/in/*", "gs://b/in/sub/a.json", false),
            ("gs://b/in/*", "gs://b/in/", true),
            ("gs://b/instances*", "gs://b/instances-0001", true),
            ("gs://b/**", "gs://b/x/y/z", true),
            ("gs://b/**/z.json", "gs://b/z.json", true),
            ("gs://b/**/z.json", "gs://b/x/y/z.json", true),
            ("gs://b/**/z.json", "gs://b/x/yz.json", false),
            ("gs://b/a**z", "gs://b/a/q/z", true),
            ("gs://b/part-?.json", "gs://b/part-1.json", true),
            ("gs://b/part-?.json", "gs://b/part-12.json", false),
            ("gs://b/part-?", "gs://b/part-/", false),
            ("gs://b/part-[0-2].json", "gs://b/part-2.json", true),
            ("gs://b/part-[0-2].json", "gs://b/part-3.json", false),
            ("gs://b/part-[!0-2].json", "gs://b/part-3.json", true),
            ("gs://b/part-[^0-2].json", "gs://b/part-1.json", false),
            ("gs://b/x[!a]y", "gs://b/x/y", false),
            ("gs://b/[]]", "gs://b/]", true),
            ("gs://b/[a-]", "gs://b/-", true),
            ("gs://b/file.json", "gs://b/fileXjson", false),
            ("gs://b/(x)+.json", "gs://b/(x)+.json", true),
            ("data/é*", "data/été.jsonl", true),
        ];
        for (pattern, location, want) in cases {
            let p = Pattern::new(pattern).unwrap();
            assert_eq!(p.matches(location), want, "{pattern} vs {location}");
        }
    }

    #[test]
    fn literal_prefixes() {
        for (pattern, prefix) in [
            ("gs://b/in/*.json", "gs://b/in/"),
            ("gs://b/instances*", "gs://b/instances"),
            ("a/b/c", "a/b/c"),
            ("a?b", "a"),
            ("[ab]", ""),
        ] {
            assert_eq!(
                Pattern::new(pattern).unwrap().literal_prefix(pattern),
                prefix
            );
        }
    }

    #[test]
    fn bad_classes() {
        assert_eq!(
            Pattern::new("a[bc").unwrap_err(),
            "unclosed '[' at character 1"
        );
        assert_eq!(
            Pattern::new("a[z-a]").unwrap_err(),
            "reversed range 'z-a' at character 2"
        );
        assert!(has_wildcard("a[") && has_wildcard("*") && !has_wildcard("a/b"));
    }
}
