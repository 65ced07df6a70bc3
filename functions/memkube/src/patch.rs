//! JSON merge patch (RFC 7386) and JSON patch (RFC 6902).

use serde_json::{Map, Value};

/// Applies an RFC 7386 merge patch to `target` in place.
pub(crate) fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(map) = target else {
        unreachable!("target was just made an object")
    };
    for (k, v) in patch {
        if v.is_null() {
            map.remove(k);
        } else {
            merge_patch(map.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

/// Why a JSON patch could not be applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum JsonPatchError {
    /// The patch document itself is malformed (HTTP 400).
    Malformed(String),
    /// The patch is well formed but cannot be applied, e.g. a failed `test` (HTTP 422).
    Unprocessable(String),
}

fn parse_pointer(p: &str) -> Result<Vec<String>, JsonPatchError> {
    if p.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rest) = p.strip_prefix('/') else {
        return Err(JsonPatchError::Malformed(format!(
            "invalid JSON pointer {p:?}: must start with '/'"
        )));
    };
    Ok(rest
        .split('/')
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect())
}

fn array_index(tok: &str, len: usize, allow_end: bool) -> Result<usize, JsonPatchError> {
    if allow_end && tok == "-" {
        return Ok(len);
    }
    let valid = !tok.is_empty()
        && tok.chars().all(|c| c.is_ascii_digit())
        && (tok == "0" || !tok.starts_with('0'));
    let idx: usize = if valid {
        tok.parse()
            .map_err(|_| unprocessable(format!("invalid array index {tok:?}")))?
    } else {
        return Err(unprocessable(format!("invalid array index {tok:?}")));
    };
    let max = if allow_end {
        len
    } else {
        len.saturating_sub(1)
    };
    if idx > max || (!allow_end && len == 0) {
        return Err(unprocessable(format!("array index {idx} out of bounds")));
    }
    Ok(idx)
}

fn unprocessable(msg: String) -> JsonPatchError {
    JsonPatchError::Unprocessable(msg)
}

fn get<'a>(doc: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = doc;
    for tok in path {
        cur = match cur {
            Value::Object(m) => m.get(tok)?,
            Value::Array(a) => a.get(array_index(tok, a.len(), false).ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

fn parent_mut<'a>(doc: &'a mut Value, path: &[String]) -> Result<&'a mut Value, JsonPatchError> {
    let mut cur = doc;
    for tok in path {
        cur = match cur {
            Value::Object(m) => m
                .get_mut(tok)
                .ok_or_else(|| unprocessable(format!("path component {tok:?} does not exist")))?,
            Value::Array(a) => {
                let i = array_index(tok, a.len(), false)?;
                &mut a[i]
            }
            _ => {
                return Err(unprocessable(format!(
                    "path component {tok:?} is not a container"
                )));
            }
        };
    }
    Ok(cur)
}

fn add(doc: &mut Value, path: &[String], value: Value) -> Result<(), JsonPatchError> {
    let Some((last, parent_path)) = path.split_last() else {
        *doc = value;
        return Ok(());
    };
    match parent_mut(doc, parent_path)? {
        Value::Object(m) => {
            m.insert(last.clone(), value);
            Ok(())
        }
        Value::Array(a) => {
            let i = array_index(last, a.len(), true)?;
            a.insert(i, value);
            Ok(())
        }
        _ => Err(unprocessable(format!(
            "cannot add {last:?}: parent is not a container"
        ))),
    }
}

fn remove(doc: &mut Value, path: &[String]) -> Result<Value, JsonPatchError> {
    let Some((last, parent_path)) = path.split_last() else {
        return Err(unprocessable("cannot remove the document root".into()));
    };
    match parent_mut(doc, parent_path)? {
        Value::Object(m) => m
            .remove(last)
            .ok_or_else(|| unprocessable(format!("cannot remove {last:?}: not found"))),
        Value::Array(a) => {
            let i = array_index(last, a.len(), false)?;
            Ok(a.remove(i))
        }
        _ => Err(unprocessable(format!(
            "cannot remove {last:?}: parent is not a container"
        ))),
    }
}

fn str_field<'a>(op: &'a Map<String, Value>, name: &str) -> Result<&'a str, JsonPatchError> {
    op.get(name).and_then(Value::as_str).ok_or_else(|| {
        JsonPatchError::Malformed(format!(
            "JSON patch operation is missing string field {name:?}"
        ))
    })
}

/// Applies an RFC 6902 JSON patch. The document is left untouched on error.
pub(crate) fn json_patch(doc: &mut Value, patch: &Value) -> Result<(), JsonPatchError> {
    let Value::Array(ops) = patch else {
        return Err(JsonPatchError::Malformed(
            "a JSON patch must be an array of operations".into(),
        ));
    };
    let mut work = doc.clone();
    for op in ops {
        let Value::Object(op) = op else {
            return Err(JsonPatchError::Malformed(
                "a JSON patch operation must be an object".into(),
            ));
        };
        let kind = str_field(op, "op")?;
        let path = parse_pointer(str_field(op, "path")?)?;
        let value = || {
            op.get("value").cloned().ok_or_else(|| {
                JsonPatchError::Malformed(format!("{kind:?} operation requires \"value\""))
            })
        };
        match kind {
            "add" => add(&mut work, &path, value()?)?,
            "remove" => {
                remove(&mut work, &path)?;
            }
            "replace" => {
                let v = value()?;
                if path.is_empty() {
                    work = v;
                } else {
                    remove(&mut work, &path)?;
                    add(&mut work, &path, v)?;
                }
            }
            "test" => {
                let expected = value()?;
                let actual = get(&work, &path);
                if actual != Some(&expected) {
                    return Err(unprocessable(format!(
                        "testing value {} failed",
                        op.get("path").and_then(Value::as_str).unwrap_or_default()
                    )));
                }
            }
            "move" => {
                let from = parse_pointer(str_field(op, "from")?)?;
                if path.len() > from.len() && path[..from.len()] == from[..] {
                    return Err(unprocessable(
                        "cannot move a value into one of its children".into(),
                    ));
                }
                let v = remove(&mut work, &from)?;
                add(&mut work, &path, v)?;
            }
            "copy" => {
                let from = parse_pointer(str_field(op, "from")?)?;
                let v = get(&work, &from)
                    .cloned()
                    .ok_or_else(|| unprocessable("copy source does not exist".into()))?;
                add(&mut work, &path, v)?;
            }
            other => {
                return Err(JsonPatchError::Malformed(format!(
                    "unknown JSON patch operation {other:?}"
                )));
            }
        }
    }
    *doc = work;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_rfc7386_examples() {
        let mut t = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut t, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(t, json!({"a": "z", "c": {"d": "e"}}));
        let mut t = json!({"a": [1, 2]});
        merge_patch(&mut t, &json!({"a": [3]}));
        assert_eq!(t, json!({"a": [3]}));
        let mut t = json!({"a": "x"});
        merge_patch(&mut t, &json!({"b": {"c": null, "d": 1}}));
        assert_eq!(t, json!({"a": "x", "b": {"d": 1}}));
    }

    #[test]
    fn json_patch_operations() {
        let mut d = json!({"a": {"b": [1, 2]}, "c": 1});
        json_patch(
            &mut d,
            &json!([
                {"op": "add", "path": "/a/b/-", "value": 3},
                {"op": "add", "path": "/a/b/0", "value": 0},
                {"op": "replace", "path": "/c", "value": 2},
                {"op": "copy", "from": "/c", "path": "/d"},
                {"op": "move", "from": "/d", "path": "/a/e"},
                {"op": "remove", "path": "/a/b/1"},
                {"op": "test", "path": "/a/b", "value": [0, 2, 3]},
                {"op": "add", "path": "/x~1y", "value": true}
            ]),
        )
        .unwrap();
        assert_eq!(
            d,
            json!({"a": {"b": [0, 2, 3], "e": 2}, "c": 2, "x/y": true})
        );
    }

    #[test]
    fn json_patch_failures_leave_document_untouched() {
        let mut d = json!({"a": 1});
        let err = json_patch(
            &mut d,
            &json!([{"op": "replace", "path": "/a", "value": 5}, {"op": "test", "path": "/a", "value": 1}]),
        )
        .unwrap_err();
        assert!(matches!(err, JsonPatchError::Unprocessable(_)));
        assert_eq!(d, json!({"a": 1}));
        assert!(matches!(
            json_patch(&mut d, &json!([{"op": "remove", "path": "/zz"}])),
            Err(JsonPatchError::Unprocessable(_))
        ));
        assert!(matches!(
            json_patch(&mut d, &json!({"op": "add"})),
            Err(JsonPatchError::Malformed(_))
        ));
        assert!(matches!(
            json_patch(&mut d, &json!([{"op": "frobnicate", "path": "/a"}])),
            Err(JsonPatchError::Malformed(_))
        ));
    }
}
