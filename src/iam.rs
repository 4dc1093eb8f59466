//! IAM for jobs, models and versions: the policy messages of
//! `getIamPolicy` / `setIamPolicy`, the predefined roles and their
//! `ml.jobs.*`, `ml.models.*`, `ml.versions.*` and `ml.operations.*`
//! permissions, and the callers a service checks them for.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::error::{Error, Violation};
use crate::model::Etag;

/// `ml.jobs.cancel`: needed by `jobs.cancel`.
pub const CANCEL: &str = "ml.jobs.cancel";
/// `ml.jobs.create`: needed by `jobs.create`, on the project.
pub const CREATE: &str = "ml.jobs.create";
/// `ml.jobs.get`: needed by `jobs.get`.
pub const GET: &str = "ml.jobs.get";
/// `ml.jobs.getIamPolicy`: needed by `jobs.getIamPolicy`.
pub const GET_IAM_POLICY: &str = "ml.jobs.getIamPolicy";
/// `ml.jobs.list`: needed by `jobs.list`, on the project.
pub const LIST: &str = "ml.jobs.list";
/// `ml.jobs.setIamPolicy`: needed by `jobs.setIamPolicy`.
pub const SET_IAM_POLICY: &str = "ml.jobs.setIamPolicy";
/// `ml.jobs.update`: needed by `jobs.patch`.
pub const UPDATE: &str = "ml.jobs.update";

/// Every `ml.jobs.*` permission, in alphabetical order.
pub const JOB_PERMISSIONS: &[&str] = &[
    CANCEL,
    CREATE,
    GET,
    GET_IAM_POLICY,
    LIST,
    SET_IAM_POLICY,
    UPDATE,
];

/// `ml.models.create`: needed by `models.create`, on the project.
pub const MODELS_CREATE: &str = "ml.models.create";
/// `ml.models.delete`: needed by `models.delete`.
pub const MODELS_DELETE: &str = "ml.models.delete";
/// `ml.models.get`: needed by `models.get`.
pub const MODELS_GET: &str = "ml.models.get";
/// `ml.models.list`: needed by `models.list`, on the project.
pub const MODELS_LIST: &str = "ml.models.list";
/// `ml.models.update`: needed by `versions.setDefault`.
pub const MODELS_UPDATE: &str = "ml.models.update";
/// `ml.versions.create`: needed by `versions.create`.
pub const VERSIONS_CREATE: &str = "ml.versions.create";
/// `ml.versions.delete`: needed by `versions.delete`.
pub const VERSIONS_DELETE: &str = "ml.versions.delete";
/// `ml.versions.get`: needed by `versions.get`.
pub const VERSIONS_GET: &str = "ml.versions.get";
/// `ml.versions.list`: needed by `versions.list`.
pub const VERSIONS_LIST: &str = "ml.versions.list";
/// `ml.operations.get`: needed by `operations.get`.
pub const OPERATIONS_GET: &str = "ml.operations.get";

/// The `ml.models.*`, `ml.versions.*` and `ml.operations.*` permissions a
/// predefined role grants, from Google's role reference
/// (<https://cloud.google.com/iam/docs/roles-permissions/ml>), as far as
/// this crate serves those methods. Other roles grant none.
///
/// # Example
/// ```
/// use batch_prediction::iam::model_role_permissions;
///
/// assert!(model_role_permissions("roles/ml.viewer").contains(&"ml.models.get"));
/// assert!(!model_role_permissions("roles/ml.viewer").contains(&"ml.models.create"));
/// assert!(model_role_permissions("roles/ml.jobOwner").is_empty());
/// ```
pub fn model_role_permissions(role: &str) -> &'static [&'static str] {
    const ALL: &[&str] = &[
        MODELS_CREATE,
        MODELS_DELETE,
        MODELS_GET,
        MODELS_LIST,
        MODELS_UPDATE,
        OPERATIONS_GET,
        VERSIONS_CREATE,
        VERSIONS_DELETE,
        VERSIONS_GET,
        VERSIONS_LIST,
    ];
    const READ: &[&str] = &[
        MODELS_GET,
        MODELS_LIST,
        OPERATIONS_GET,
        VERSIONS_GET,
        VERSIONS_LIST,
    ];
    match role {
        "roles/owner" | "roles/editor" | "roles/ml.admin" | "roles/ml.editor" => ALL,
        "roles/ml.modelOwner" => &[
            MODELS_DELETE,
            MODELS_GET,
            MODELS_UPDATE,
            VERSIONS_CREATE,
            VERSIONS_DELETE,
            VERSIONS_GET,
            VERSIONS_LIST,
        ],
        "roles/ml.developer" => &[
            MODELS_CREATE,
            MODELS_GET,
            MODELS_LIST,
            OPERATIONS_GET,
            VERSIONS_GET,
            VERSIONS_LIST,
        ],
        "roles/ml.modelUser" => &[MODELS_GET, VERSIONS_GET, VERSIONS_LIST],
        "roles/viewer" | "roles/ml.viewer" => READ,
        "roles/ml.operationOwner" => &[OPERATIONS_GET],
        _ => &[],
    }
}

/// The `ml.jobs.*` permissions a predefined role grants, from Google's
/// role reference (<https://cloud.google.com/iam/docs/roles-permissions/ml>,
/// <https://cloud.google.com/ai-platform/training/docs/access-control>).
/// Roles this table does not know (custom roles, `roles/ml.serviceAgent`)
/// grant none.
///
/// # Example
/// ```
/// use batch_prediction::iam::role_permissions;
///
/// assert_eq!(role_permissions("roles/ml.viewer"), ["ml.jobs.get", "ml.jobs.list"]);
/// assert!(role_permissions("roles/ml.operationOwner").is_empty());
/// ```
pub fn role_permissions(role: &str) -> &'static [&'static str] {
    const ALL: &[&str] = JOB_PERMISSIONS;
    const EDITOR: &[&str] = &[CANCEL, CREATE, GET, GET_IAM_POLICY, LIST, UPDATE];
    match role {
        "roles/owner" | "roles/ml.admin" | "roles/ml.jobOwner" => ALL,
        "roles/editor" | "roles/ml.editor" => EDITOR,
        "roles/viewer" => &[GET, GET_IAM_POLICY, LIST],
        "roles/ml.developer" => &[CREATE, GET, GET_IAM_POLICY, LIST],
        "roles/ml.viewer" => &[GET, LIST],
        "roles/iam.securityAdmin" => &[GET_IAM_POLICY, LIST, SET_IAM_POLICY],
        "roles/iam.securityReviewer" | "roles/iam.securityAuditor" => &[GET_IAM_POLICY, LIST],
        "roles/iam.supportUser" => &[GET],
        _ => &[],
    }
}

/// Who is calling: one identity and the groups it belongs to.
///
/// A binding's members match a caller this way:
/// - `allUsers`: everyone, the anonymous caller too;
/// - `allAuthenticatedUsers`: every caller but the anonymous one;
/// - `user:`, `serviceAccount:`, `principal://`: the caller's identity;
/// - `group:`, `principalSet://`: a group the caller was given with
///   [`Caller::with_group`] (this crate cannot look groups up);
/// - `domain:D`: a `user:` or `serviceAccount:` identity whose email ends in `@D`;
/// - `deleted:…`: nobody.
///
/// Emails and domains compare without regard to ASCII case.
///
/// # Example
/// ```
/// use batch_prediction::iam::Caller;
///
/// let alice = Caller::new("user:alice@example.com")?.with_group("group:ml-team@example.com")?;
/// assert_eq!(alice.identity(), Some("user:alice@example.com"));
/// assert!(Caller::new("alice@example.com").is_err()); // the kind prefix is required
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    identity: Option<String>,
    groups: Vec<String>,
}

impl Caller {
    /// A caller with `identity`: `user:EMAIL`, `serviceAccount:EMAIL` or
    /// `principal://…`.
    ///
    /// # Errors
    /// [`Code::InvalidArgument`](crate::Code::InvalidArgument) for any other form.
    pub fn new(identity: &str) -> Result<Caller, Error> {
        let ok = match identity.split_once(':') {
            Some(("user" | "serviceAccount", email)) => is_email(email),
            _ => identity.starts_with("principal://") && identity.len() > "principal://".len(),
        };
        if !ok {
            return Err(invalid_argument(
                "caller",
                format!(
                    "invalid caller {identity:?}: expected user:EMAIL, serviceAccount:EMAIL or principal://…"
                ),
            ));
        }
        Ok(Caller {
            identity: Some(identity.to_owned()),
            groups: Vec::new(),
        })
    }

    /// The anonymous caller: only `allUsers` bindings apply to it.
    pub fn anonymous() -> Caller {
        Caller {
            identity: None,
            groups: Vec::new(),
        }
    }

    /// Adds a group the caller belongs to: `group:EMAIL` or `principalSet://…`.
    ///
    /// # Errors
    /// [`Code::InvalidArgument`](crate::Code::InvalidArgument) for any other form.
    pub fn with_group(mut self, group: &str) -> Result<Caller, Error> {
        let ok = match group.split_once(':') {
            Some(("group", email)) => is_email(email),
            _ => group.starts_with("principalSet://") && group.len() > "principalSet://".len(),
        };
        if !ok {
            return Err(invalid_argument(
                "caller",
                format!("invalid group {group:?}: expected group:EMAIL or principalSet://…"),
            ));
        }
        self.groups.push(group.to_owned());
        Ok(self)
    }

    /// The identity, or `None` for the anonymous caller.
    pub fn identity(&self) -> Option<&str> {
        self.identity.as_deref()
    }

    /// The groups, as given.
    pub fn groups(&self) -> &[String] {
        &self.groups
    }

    /// Whether a binding's `member` covers this caller.
    pub fn is_member(&self, member: &str) -> bool {
        match member {
            "allUsers" => return true,
            "allAuthenticatedUsers" => return self.identity.is_some(),
            _ => {}
        }
        let same = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
        if let Some((kind, rest)) = member.split_once(':') {
            match kind {
                "user" | "serviceAccount" => {
                    return self.identity.as_deref().is_some_and(|id| same(id, member));
                }
                "group" => return self.groups.iter().any(|g| same(g, member)),
                "domain" => {
                    return self.identity.as_deref().is_some_and(|id| {
                        matches!(id.split_once(':'), Some(("user" | "serviceAccount", _)))
                            && id
                                .rsplit_once('@')
                                .is_some_and(|(_, domain)| same(domain, rest))
                    });
                }
                "deleted" => return false,
                _ => {}
            }
        }
        if member.starts_with("principalSet://") {
            self.groups.iter().any(|g| g == member)
        } else {
            self.identity.as_deref() == Some(member)
        }
    }
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.identity.as_deref().unwrap_or("anonymous"))
    }
}

/// An email address as IAM members name them: one `@`; before it, the
/// characters RFC 5322 allows unquoted (letters, digits and
/// ``.!#$%&'*+/=?^_`{|}~-``); after it, a domain of at least two
/// dot-separated labels of letters, digits and `-`. So no separators
/// (`,`, `;`, spaces, `<>`) that could smuggle a second address past a
/// `domain:` binding.
fn is_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    let local_ok = !local.is_empty()
        && local
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+/=?^_`{|}~.-".contains(c));
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = labels.len() >= 2
        && labels.iter().all(|label| {
            !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    local_ok && domain_ok
}

/// `google.type.Expr`: a condition on a binding, in CEL.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct Expr {
    /// The CEL expression.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub expression: String,
    /// A short title.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub title: String,
    /// A longer description.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Where the expression came from, for error messages.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub location: String,
}

/// `google.iam.v1.Binding`: a role granted to members.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct Binding {
    /// The role, e.g. `roles/ml.jobOwner`.
    #[serde(default, deserialize_with = "null_default")]
    pub role: String,
    /// The members, e.g. `user:alice@example.com`.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub members: Vec<String>,
    /// A condition. This crate cannot evaluate CEL, so a conditional binding
    /// is kept and returned but grants nothing when permissions are checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<Expr>,
}

impl Binding {
    /// A binding of `role` to `members`.
    pub fn new<I, S>(role: impl Into<String>, members: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Binding {
            role: role.into(),
            members: members.into_iter().map(Into::into).collect(),
            condition: None,
        }
    }
}

/// `google.iam.v1.Policy`: who holds which role on a job (or, for a
/// [`JobService`](crate::JobService) with enforcement, on a project).
///
/// `version` is 0, 1 or 3; conditional bindings need 3. A service returns
/// the lowest version that represents the policy: 3 with conditions, else 1.
/// `auditConfigs` are kept as sent and returned unchanged.
///
/// # Example
/// ```
/// use batch_prediction::iam::{Binding, Policy};
///
/// let policy = Policy::from_json(r#"{"bindings": [{"role": "roles/ml.viewer", "members": ["user:bob@example.com"]}]}"#)?;
/// assert_eq!(policy.bindings, [Binding::new("roles/ml.viewer", ["user:bob@example.com"])]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct Policy {
    /// The policy format version: 0, 1 or 3.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "is_zero"
    )]
    pub version: i32,
    /// The role bindings.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub bindings: Vec<Binding>,
    /// `auditConfigs`, kept as JSON.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub audit_configs: Vec<Value>,
    /// The etag from `getIamPolicy`, sent back on `setIamPolicy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<Etag>,
}

fn is_zero(v: &i32) -> bool {
    *v == 0
}

fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// The most principals a policy may name, across its bindings.
pub const MAX_POLICY_MEMBERS: usize = 1500;
/// The most `group:` principals a policy may name.
pub const MAX_POLICY_GROUPS: usize = 250;

impl Policy {
    /// Reads a policy from the API's JSON.
    ///
    /// # Errors
    /// [`Code::InvalidArgument`](crate::Code::InvalidArgument) naming the field.
    pub fn from_json(json: &str) -> Result<Policy, Error> {
        serde_json::from_str(json).map_err(|e| Error::json("policy", e))
    }

    /// Reads a policy from a JSON value.
    ///
    /// # Errors
    /// As [`Policy::from_json`].
    pub fn from_value(value: Value) -> Result<Policy, Error> {
        serde_json::from_value(value).map_err(|e| Error::json("policy", e))
    }

    /// The policy as the API's JSON.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).expect("a policy always serializes")
    }

    /// Whether any binding has a condition.
    pub fn has_conditions(&self) -> bool {
        self.bindings.iter().any(|b| b.condition.is_some())
    }

    /// Adds `member` to `role`'s unconditional binding, creating it if needed.
    #[must_use]
    pub fn grant(mut self, role: &str, member: &str) -> Self {
        match self
            .bindings
            .iter_mut()
            .find(|b| b.role == role && b.condition.is_none())
        {
            Some(b) if b.members.iter().any(|m| m == member) => {}
            Some(b) => b.members.push(member.to_owned()),
            None => self.bindings.push(Binding::new(role, [member])),
        }
        self
    }

    /// The permissions among `wanted` that `caller` holds through this
    /// policy's unconditional bindings.
    pub(crate) fn grants(&self, caller: &Caller, permission: &str) -> bool {
        self.bindings.iter().any(|b| {
            b.condition.is_none()
                && (role_permissions(&b.role).contains(&permission)
                    || model_role_permissions(&b.role).contains(&permission))
                && b.members.iter().any(|m| caller.is_member(m))
        })
    }

    /// Every rule of a `setIamPolicy` request this policy breaks, with
    /// field paths under `prefix`.
    pub(crate) fn violations(&self, prefix: &str) -> Vec<Violation> {
        let mut out = Vec::new();
        let mut push =
            |field: String, description: String| out.push(Violation { field, description });
        if ![0, 1, 3].contains(&self.version) {
            push(
                format!("{prefix}.version"),
                format!("must be 0, 1 or 3, got {}", self.version),
            );
        }
        let (mut members, mut groups) = (0usize, 0usize);
        for (i, b) in self.bindings.iter().enumerate() {
            let at = format!("{prefix}.bindings[{i}]");
            if !is_role(&b.role) {
                push(
                    format!("{at}.role"),
                    format!(
                        "invalid role {:?}: expected roles/NAME, projects/PROJECT/roles/NAME or organizations/ORG/roles/NAME",
                        b.role
                    ),
                );
            }
            if b.members.is_empty() {
                push(
                    format!("{at}.members"),
                    "must name at least one member".into(),
                );
            }
            for (j, m) in b.members.iter().enumerate() {
                members += 1;
                groups += usize::from(m.starts_with("group:"));
                if !is_member(m) {
                    push(
                        format!("{at}.members[{j}]"),
                        format!(
                            "invalid member {m:?}: expected allUsers, allAuthenticatedUsers, user:EMAIL, serviceAccount:EMAIL, group:EMAIL, domain:DOMAIN, principal://…, principalSet://… or deleted:…"
                        ),
                    );
                }
            }
            if b.condition.is_some() && self.version != 3 {
                push(
                    format!("{at}.condition"),
                    format!(
                        "a conditional binding needs policy version 3, got {}",
                        self.version
                    ),
                );
            }
        }
        if members > MAX_POLICY_MEMBERS {
            push(
                format!("{prefix}.bindings"),
                format!("names {members} principals; at most {MAX_POLICY_MEMBERS} are allowed"),
            );
        }
        if groups > MAX_POLICY_GROUPS {
            push(
                format!("{prefix}.bindings"),
                format!("names {groups} groups; at most {MAX_POLICY_GROUPS} are allowed"),
            );
        }
        for (i, c) in self.audit_configs.iter().enumerate() {
            if !c.is_object() {
                push(
                    format!("{prefix}.auditConfigs[{i}]"),
                    "must be an AuditConfig object".into(),
                );
            }
        }
        out
    }
}

fn is_role(role: &str) -> bool {
    let segments: Vec<&str> = role.split('/').collect();
    let ok = |s: &&str| !s.is_empty();
    match segments.as_slice() {
        ["roles", name] => ok(name),
        ["projects" | "organizations", parent, "roles", name] => ok(parent) && ok(name),
        _ => false,
    }
}

fn is_member(member: &str) -> bool {
    match member {
        "allUsers" | "allAuthenticatedUsers" => true,
        _ => match member.split_once(':') {
            Some(("user" | "serviceAccount" | "group", email)) => is_email(email),
            Some(("domain", domain)) => is_email(&format!("x@{domain}")),
            Some(("deleted", rest)) => !rest.is_empty(),
            Some(("principal" | "principalSet", rest)) => rest.len() > 2 && rest.starts_with("//"),
            _ => false,
        },
    }
}

fn invalid_argument(field: &str, description: String) -> Error {
    Error::invalid_argument(field, description)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_matching() {
        let alice = Caller::new("user:Alice@Example.com")
            .unwrap()
            .with_group("group:team@example.com")
            .unwrap();
        let anon = Caller::anonymous();
        let table: &[(&str, bool, bool)] = &[
            // (member, alice, anonymous)
            ("allUsers", true, true),
            ("allAuthenticatedUsers", true, false),
            ("user:alice@example.com", true, false),
            ("user:bob@example.com", false, false),
            ("serviceAccount:alice@example.com", false, false),
            ("group:TEAM@example.com", true, false),
            ("group:other@example.com", false, false),
            ("domain:example.com", true, false),
            ("domain:example.org", false, false),
            ("deleted:user:alice@example.com?uid=1", false, false),
            ("principalSet://x/y", false, false),
        ];
        for &(member, a, n) in table {
            assert_eq!(alice.is_member(member), a, "alice vs {member}");
            assert_eq!(anon.is_member(member), n, "anonymous vs {member}");
        }
    }

    #[test]
    fn policy_rules() {
        let p = Policy::from_json(
            r#"{"version": 2, "bindings": [
                {"role": "ml.viewer", "members": ["bob@example.com", "user:bob@example.com"]},
                {"role": "roles/ml.admin", "members": [], "condition": {"expression": "true"}}
            ], "auditConfigs": [1]}"#,
        )
        .unwrap();
        let v: Vec<String> = p
            .violations("policy")
            .iter()
            .map(|v| v.to_string())
            .collect();
        assert_eq!(
            v,
            [
                "policy.version: must be 0, 1 or 3, got 2",
                "policy.bindings[0].role: invalid role \"ml.viewer\": expected roles/NAME, projects/PROJECT/roles/NAME or organizations/ORG/roles/NAME",
                "policy.bindings[0].members[0]: invalid member \"bob@example.com\": expected allUsers, allAuthenticatedUsers, user:EMAIL, serviceAccount:EMAIL, group:EMAIL, domain:DOMAIN, principal://…, principalSet://… or deleted:…",
                "policy.bindings[1].members: must name at least one member",
                "policy.bindings[1].condition: a conditional binding needs policy version 3, got 2",
                "policy.auditConfigs[0]: must be an AuditConfig object",
            ]
        );
        assert!(Policy::default().violations("policy").is_empty());
        let err = Policy::from_json(r#"{"bindings": [], "owner": "x"}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `owner`"), "{err}");
        assert_eq!(
            Policy::from_json(r#"{"version": null, "bindings": null}"#).unwrap(),
            Policy::default()
        );
    }

    #[test]
    fn grants_ignore_conditional_bindings() {
        let alice = Caller::new("user:alice@example.com").unwrap();
        let mut p = Policy::default().grant("roles/ml.viewer", "user:alice@example.com");
        assert!(p.grants(&alice, GET));
        assert!(!p.grants(&alice, CANCEL));
        p.bindings[0].condition = Some(Expr {
            expression: "request.time < timestamp(\"2030-01-01T00:00:00Z\")".into(),
            ..Expr::default()
        });
        assert!(!p.grants(&alice, GET));
    }

    #[test]
    fn emails_are_one_address_each() {
        for ok in [
            "user:alice@example.com",
            "user:a.b+tag@sub.example.co",
            "serviceAccount:sa-1@p.iam.gserviceaccount.com",
        ] {
            assert!(Caller::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "user:x@evil.org,y@example.com",
            "user:x@evil.org;y@example.com",
            "user:x y@example.com",
            "user:<x@example.com>",
            "user:x@@example.com",
            "user:@example.com",
            "user:x@example",
            "user:x@example..com",
            "user:x@exa_mple.com",
        ] {
            assert!(Caller::new(bad).is_err(), "{bad}");
        }
        // And so a domain binding sees the one domain there is.
        let policy = Policy::from_value(serde_json::json!({
            "bindings": [{"role": "roles/ml.viewer", "members": ["domain:example.com"]}]
        }))
        .unwrap();
        let bob = Caller::new("user:bob@example.com").unwrap();
        assert!(policy.grants(&bob, "ml.jobs.get"));
        let eve = Caller::new("user:eve@evil.org").unwrap();
        assert!(!policy.grants(&eve, "ml.jobs.get"));
        assert!(!is_member("domain:example.com,evil.org"));
    }
}
