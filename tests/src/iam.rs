//! The template's IAM policies, read from `template.yaml` with its intrinsics resolved to a
//! test stack's names, and a small evaluator for the calls the proxy recorded: moto
//! enforces no IAM, so this is what proves that every call a function makes is one its
//! role allows.
//!
//! The evaluator covers what the template uses: `Allow` and `Deny` statements, `*` and `?`
//! wildcards in actions (case-insensitive) and resources, and the condition operators
//! `StringEquals`, `StringLike`, `ArnEquals`, `ArnLike` and `Bool`, and on multivalued keys
//! (`dynamodb:LeadingKeys`) `ForAllValues:StringLike` and `ForAllValues:StringEquals`. An
//! explicit deny wins; without an allow, the call is denied. A condition key the call does
//! not carry fails the condition, as in IAM; a `ForAllValues:` condition holds for a call
//! without the key, as in IAM, so a statement using one should allow only actions that
//! always carry it (every DynamoDB item operation does).

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::proxy::Need;
use crate::repo_root;

/// The template as JSON, with the short-form intrinsics (`!Sub`, `!GetAtt A.B`, ...) in
/// their long form (`{"Fn::Sub": ...}`, `{"Fn::GetAtt": ["A", "B"]}`).
pub fn template() -> Value {
    let path = repo_root().join("template.yaml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let yaml: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    to_json(yaml)
}

fn to_json(v: serde_yaml_ng::Value) -> Value {
    use serde_yaml_ng::Value as Y;
    match v {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => serde_json::to_value(n).unwrap_or(Value::Null),
        Y::String(s) => Value::String(s),
        Y::Sequence(seq) => Value::Array(seq.into_iter().map(to_json).collect()),
        Y::Mapping(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| {
                    let key = match k {
                        Y::String(s) => s,
                        other => serde_yaml_ng::to_string(&other).unwrap_or_default(),
                    };
                    (key, to_json(v))
                })
                .collect(),
        ),
        Y::Tagged(t) => {
            let tag = t.tag.to_string();
            let name = tag.trim_start_matches('!');
            let value = to_json(t.value);
            let long = if name == "Ref" {
                "Ref".to_string()
            } else {
                format!("Fn::{name}")
            };
            let value = match (name, value) {
                ("GetAtt", Value::String(s)) => {
                    let (res, attr) = s.split_once('.').unwrap_or((&s, ""));
                    Value::Array(vec![res.into(), attr.into()])
                }
                (_, v) => v,
            };
            Value::Object(Map::from_iter([(long, value)]))
        }
    }
}

/// The names the template's references resolve to for one test stack.
#[derive(Debug, Default, Clone)]
pub struct Bindings {
    /// `Ref` of a resource or parameter, and the pseudo parameters (`AWS::Region`, ...).
    pub refs: BTreeMap<String, String>,
    /// `Fn::GetAtt` of `(resource, attribute)`.
    pub attrs: BTreeMap<(String, String), String>,
}

impl Bindings {
    fn get_ref(&self, name: &str) -> Result<String, String> {
        self.refs
            .get(name)
            .cloned()
            .ok_or_else(|| format!("the IAM check has no value for Ref {name}"))
    }

    fn get_att(&self, res: &str, attr: &str) -> Result<String, String> {
        self.attrs
            .get(&(res.to_string(), attr.to_string()))
            .cloned()
            .ok_or_else(|| format!("the IAM check has no value for {res}.{attr}"))
    }

    /// Resolves the intrinsics the policies use: `Ref`, `Fn::GetAtt`, `Fn::Sub`,
    /// `Fn::Join`.
    pub fn resolve(&self, v: &Value) -> Result<Value, String> {
        Ok(match v {
            Value::Object(m) if m.len() == 1 => {
                let (k, arg) = m.iter().next().expect("one entry");
                match k.as_str() {
                    "Ref" => Value::String(self.get_ref(arg.as_str().unwrap_or_default())?),
                    "Fn::GetAtt" => {
                        let parts: Vec<&str> = arg
                            .as_array()
                            .map(|a| a.iter().filter_map(Value::as_str).collect())
                            .unwrap_or_default();
                        match parts.as_slice() {
                            [res, attr] => Value::String(self.get_att(res, attr)?),
                            _ => return Err(format!("bad Fn::GetAtt {arg}")),
                        }
                    }
                    "Fn::Sub" => Value::String(self.sub(arg)?),
                    "Fn::Join" => {
                        let parts = arg.as_array().ok_or("bad Fn::Join")?;
                        let sep = parts.first().and_then(Value::as_str).unwrap_or("");
                        let items = self.resolve(parts.get(1).unwrap_or(&Value::Null))?;
                        let items: Vec<String> = items
                            .as_array()
                            .map(|a| {
                                a.iter()
                                    .map(|x| x.as_str().unwrap_or_default().to_string())
                                    .collect()
                            })
                            .unwrap_or_default();
                        Value::String(items.join(sep))
                    }
                    _ => Value::Object(
                        m.iter()
                            .map(|(k, v)| Ok((k.clone(), self.resolve(v)?)))
                            .collect::<Result<_, String>>()?,
                    ),
                }
            }
            Value::Object(m) => Value::Object(
                m.iter()
                    .map(|(k, v)| Ok((k.clone(), self.resolve(v)?)))
                    .collect::<Result<_, String>>()?,
            ),
            Value::Array(a) => Value::Array(
                a.iter()
                    .map(|x| self.resolve(x))
                    .collect::<Result<_, String>>()?,
            ),
            other => other.clone(),
        })
    }

    fn sub(&self, arg: &Value) -> Result<String, String> {
        let (template, vars) = match arg {
            Value::String(s) => (s.as_str(), Map::new()),
            Value::Array(a) => (
                a.first().and_then(Value::as_str).unwrap_or_default(),
                a.get(1)
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default(),
            ),
            _ => return Err(format!("bad Fn::Sub {arg}")),
        };
        let mut out = String::new();
        let mut rest = template;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let end = rest[start..]
                .find('}')
                .ok_or_else(|| format!("unclosed ${{ in {template}"))?;
            let name = &rest[start + 2..start + end];
            let value = match vars.get(name) {
                Some(v) => self.resolve(v)?.as_str().unwrap_or_default().to_string(),
                None => match name.split_once('.') {
                    Some((res, attr)) => self.get_att(res, attr)?,
                    None => self.get_ref(name)?,
                },
            };
            out.push_str(&value);
            rest = &rest[start + end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

/// One policy statement, resolved.
#[derive(Debug, Clone)]
pub struct Statement {
    pub sid: String,
    pub allow: bool,
    pub actions: Vec<String>,
    pub resources: Vec<String>,
    /// Operator to (condition key to accepted values).
    pub conditions: BTreeMap<String, BTreeMap<String, Vec<String>>>,
}

fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Bool(b) => vec![b.to_string()],
        Value::Array(a) => a.iter().flat_map(strings).collect(),
        _ => Vec::new(),
    }
}

/// The statements of a policy document.
pub fn statements(document: &Value) -> Vec<Statement> {
    let list = match &document["Statement"] {
        Value::Array(a) => a.clone(),
        v @ Value::Object(_) => vec![v.clone()],
        _ => Vec::new(),
    };
    list.iter()
        .map(|st| Statement {
            sid: st["Sid"].as_str().unwrap_or("").to_string(),
            allow: st["Effect"].as_str() == Some("Allow"),
            actions: strings(&st["Action"]),
            resources: strings(&st["Resource"]),
            conditions: st["Condition"]
                .as_object()
                .map(|ops| {
                    ops.iter()
                        .map(|(op, keys)| {
                            let keys = keys
                                .as_object()
                                .map(|k| k.iter().map(|(k, v)| (k.clone(), strings(v))).collect())
                                .unwrap_or_default();
                            (op.clone(), keys)
                        })
                        .collect()
                })
                .unwrap_or_default(),
        })
        .collect()
}

/// The resolved statements of an IAM role's inline policies, or of a managed policy.
pub fn policy_of(template: &Value, logical_id: &str, bindings: &Bindings) -> Vec<Statement> {
    let res = &template["Resources"][logical_id];
    let props = &res["Properties"];
    let documents: Vec<Value> = match res["Type"].as_str() {
        Some("AWS::IAM::Role") => props["Policies"]
            .as_array()
            .map(|ps| ps.iter().map(|p| p["PolicyDocument"].clone()).collect())
            .unwrap_or_default(),
        Some("AWS::IAM::ManagedPolicy") => vec![props["PolicyDocument"].clone()],
        other => panic!("{logical_id} is not a role or managed policy: {other:?}"),
    };
    documents
        .iter()
        .flat_map(|d| {
            let resolved = bindings
                .resolve(d)
                .unwrap_or_else(|e| panic!("{logical_id}: {e}"));
            statements(&resolved)
        })
        .collect()
}

/// The role of a function (`Properties.Role: !GetAtt <Role>.Arn`).
pub fn role_of_function(template: &Value, function_logical_id: &str) -> String {
    template["Resources"][function_logical_id]["Properties"]["Role"]["Fn::GetAtt"][0]
        .as_str()
        .unwrap_or_else(|| panic!("{function_logical_id} has no Role: !GetAtt <role>.Arn"))
        .to_string()
}

/// `*` (any run) and `?` (any one character) matching.
pub fn wildcard(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

fn condition_holds(op: &str, key: &str, accepted: &[String], need: &Need) -> Result<bool, String> {
    if let Some(inner) = op.strip_prefix("ForAllValues:") {
        let values = need.sets.get(key).map(Vec::as_slice).unwrap_or_default();
        for v in values {
            let one = match inner {
                "StringEquals" => accepted.iter().any(|a| a == v),
                "StringLike" => accepted.iter().any(|a| wildcard(a, v)),
                other => {
                    return Err(format!(
                        "the IAM check does not know condition ForAllValues:{other}"
                    ));
                }
            };
            if !one {
                return Ok(false);
            }
        }
        return Ok(true);
    }
    let Some(value) = need.context.get(key) else {
        return Ok(false);
    };
    Ok(match op {
        "StringEquals" | "ArnEquals" => accepted.iter().any(|a| a == value),
        "StringLike" | "ArnLike" => accepted.iter().any(|a| wildcard(a, value)),
        "Bool" => accepted.iter().any(|a| a.eq_ignore_ascii_case(value)),
        other => return Err(format!("the IAM check does not know condition {other}")),
    })
}

fn applies(st: &Statement, need: &Need) -> Result<bool, String> {
    let action = need.action.to_ascii_lowercase();
    if !st
        .actions
        .iter()
        .any(|a| wildcard(&a.to_ascii_lowercase(), &action))
    {
        return Ok(false);
    }
    if !st.resources.iter().any(|r| wildcard(r, &need.resource)) {
        return Ok(false);
    }
    for (op, keys) in &st.conditions {
        for (key, accepted) in keys {
            if !condition_holds(op, key, accepted, need)? {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// `Ok(sid)` of the statement that allows `need`, or `Err` saying why it is denied.
pub fn evaluate(statements: &[Statement], need: &Need) -> Result<String, String> {
    let mut allowed = None;
    for st in statements {
        if applies(st, need)? {
            if !st.allow {
                return Err(format!("explicitly denied by {}", st.sid));
            }
            allowed.get_or_insert_with(|| st.sid.clone());
        }
    }
    allowed.ok_or_else(|| "no statement allows it".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_runs_and_single_characters() {
        assert!(wildcard("arn:aws:s3:::b/raw/*", "arn:aws:s3:::b/raw/x/y"));
        assert!(!wildcard("arn:aws:s3:::b/raw/*", "arn:aws:s3:::b/store/x"));
        assert!(wildcard("raw/*", "raw/"));
        assert!(wildcard("a?c", "abc") && !wildcard("a?c", "ac"));
        assert!(wildcard("*", ""));
    }

    #[test]
    fn deny_wins_and_conditions_need_their_keys() {
        let doc = serde_json::json!({"Statement": [
            {"Sid": "A", "Effect": "Allow", "Action": "s3:*", "Resource": "arn:aws:s3:::b/*"},
            {"Sid": "D", "Effect": "Deny", "Action": "s3:DeleteObject", "Resource": "*"},
            {"Sid": "L", "Effect": "Allow", "Action": "s3:ListBucket", "Resource": "arn:aws:s3:::b",
             "Condition": {"StringLike": {"s3:prefix": "raw/*"}}}
        ]});
        let st = statements(&doc);
        let need = |a: &str, r: &str| Need {
            action: a.into(),
            resource: r.into(),
            context: BTreeMap::new(),
            sets: BTreeMap::new(),
        };
        assert_eq!(
            evaluate(&st, &need("s3:GetObject", "arn:aws:s3:::b/k")),
            Ok("A".into())
        );
        assert!(evaluate(&st, &need("s3:DeleteObject", "arn:aws:s3:::b/k")).is_err());
        let mut list = need("s3:ListBucket", "arn:aws:s3:::b");
        assert!(evaluate(&st, &list).is_err(), "no s3:prefix in the call");
        list.context.insert("s3:prefix".into(), "raw/abc".into());
        assert_eq!(evaluate(&st, &list), Ok("L".into()));
        list.context.insert("s3:prefix".into(), "store/abc".into());
        assert!(evaluate(&st, &list).is_err());
    }

    #[test]
    fn for_all_values_holds_when_every_value_matches() {
        let doc = serde_json::json!({"Statement": [
            {"Sid": "A", "Effect": "Allow", "Action": "dynamodb:BatchGetItem", "Resource": "arn:t",
             "Condition": {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["allow#*"]}}}
        ]});
        let st = statements(&doc);
        let need = |keys: &[&str]| Need {
            action: "dynamodb:BatchGetItem".into(),
            resource: "arn:t".into(),
            context: BTreeMap::new(),
            sets: BTreeMap::from([(
                "dynamodb:LeadingKeys".to_string(),
                keys.iter().map(|k| k.to_string()).collect(),
            )]),
        };
        assert_eq!(
            evaluate(&st, &need(&["allow#a@x", "allow#b@x"])),
            Ok("A".into())
        );
        assert!(evaluate(&st, &need(&["allow#a@x", "msg#1"])).is_err());
        assert!(evaluate(&st, &need(&["allowed#a@x"])).is_err());
    }

    #[test]
    fn subs_resolve_refs_attributes_and_pseudo_parameters() {
        let mut b = Bindings::default();
        b.refs.insert("AWS::Partition".into(), "aws".into());
        b.refs.insert("AWS::StackName".into(), "s".into());
        b.attrs.insert(
            ("MailBucket".into(), "Arn".into()),
            "arn:aws:s3:::s-mail".into(),
        );
        let v =
            serde_json::json!({"Fn::Sub": "${MailBucket.Arn}/raw/* ${AWS::StackName}-deliver-*"});
        assert_eq!(
            b.resolve(&v).unwrap(),
            Value::String("arn:aws:s3:::s-mail/raw/* s-deliver-*".into())
        );
        assert!(b.resolve(&serde_json::json!({"Ref": "Nope"})).is_err());
    }
}
