//! Structural-schema handling of custom resources, in the order a kube-apiserver applies it
//! on every write: prune unknown fields, drop nulls the schema does not allow, apply
//! defaults, then validate.
//!
//! Modelled: `properties`, `additionalProperties`, `x-kubernetes-preserve-unknown-fields`,
//! `x-kubernetes-embedded-resource` (keeps and requires `apiVersion`/`kind`),
//! `x-kubernetes-int-or-string`, `nullable`, `default`, and the validations `type`, `enum`,
//! `required`. Not modelled: `format`, `pattern`, length/size/range limits, `anyOf`/`oneOf`/
//! `allOf`/`not` (other than the int-or-string form), list-type uniqueness, and CEL rules.

use serde_json::{Map, Value};

fn flag(schema: &Value, key: &str) -> bool {
    schema.get(key).and_then(Value::as_bool) == Some(true)
}

/// Prune, drop disallowed nulls and default `obj` in place. Returns the validation errors
/// as `(field path, detail)`, empty when the object is valid, and the paths of the unknown
/// fields pruned (a real server drops them silently; tests want to know).
pub(crate) fn admit(schema: &Value, obj: &mut Value) -> (Vec<(String, String)>, Vec<String>) {
    let mut pruned = Vec::new();
    // The root keeps apiVersion/kind/metadata like an embedded resource.
    prune_and_default(schema, obj, "", true, &mut pruned);
    let mut errors = Vec::new();
    if let Some(map) = obj.as_object() {
        for (key, value) in map {
            if let Some(s) = schema.get("properties").and_then(|p| p.get(key)) {
                validate(s, value, key, &mut errors);
            }
        }
        required(schema, map, "", &mut errors);
    }
    (errors, pruned)
}

/// A null is dropped unless the schema says `nullable: true`.
fn null_dropped(schema: &Value, value: &Value) -> bool {
    value.is_null() && !flag(schema, "nullable")
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn prune_and_default(
    schema: &Value,
    value: &mut Value,
    path: &str,
    root: bool,
    pruned: &mut Vec<String>,
) {
    match value {
        Value::Object(map) => {
            let props = schema.get("properties").and_then(Value::as_object);
            if flag(schema, "x-kubernetes-preserve-unknown-fields") {
                // Known properties are still pruned below them; unknown ones are kept.
                for (k, v) in map.iter_mut() {
                    if let Some(s) = props.and_then(|p| p.get(k)) {
                        prune_and_default(s, v, &join(path, k), false, pruned);
                    }
                }
                apply_defaults(schema, map);
                return;
            }
            if let Some(additional) = schema.get("additionalProperties") {
                match additional {
                    Value::Object(_) => {
                        map.retain(|_, v| !null_dropped(additional, v));
                        for (k, v) in map.iter_mut() {
                            prune_and_default(additional, v, &join(path, k), false, pruned);
                        }
                    }
                    Value::Bool(false) => map.clear(),
                    _ => {}
                }
                return;
            }
            let embedded = root || flag(schema, "x-kubernetes-embedded-resource");
            map.retain(|k, v| {
                let meta = embedded && matches!(k.as_str(), "apiVersion" | "kind" | "metadata");
                let known = props.and_then(|p| p.get(k));
                if known.is_none() && !meta {
                    pruned.push(join(path, k));
                }
                meta || known.is_some_and(|s| !null_dropped(s, v))
            });
            if let Some(props) = props {
                for (k, v) in map.iter_mut() {
                    // An embedded resource's metadata is ObjectMeta, not the schema's
                    // (usually bare `type: object`) node: never pruned here.
                    if embedded && k == "metadata" {
                        continue;
                    }
                    if let Some(s) = props.get(k) {
                        prune_and_default(s, v, &join(path, k), false, pruned);
                    }
                }
            }
            apply_defaults(schema, map);
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    prune_and_default(item_schema, item, &format!("{path}[{i}]"), false, pruned);
                }
            }
        }
        _ => {}
    }
}

fn apply_defaults(schema: &Value, map: &mut Map<String, Value>) {
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (k, s) in props {
            if !map.contains_key(k)
                && let Some(d) = s.get("default")
            {
                let mut d = d.clone();
                prune_and_default(s, &mut d, k, false, &mut Vec::new());
                map.insert(k.clone(), d);
            }
        }
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_ok(schema: &Value, value: &Value) -> bool {
    if value.is_null() {
        return flag(schema, "nullable");
    }
    if flag(schema, "x-kubernetes-int-or-string") {
        return matches!(type_name(value), "integer" | "string");
    }
    match schema.get("type").and_then(Value::as_str) {
        None => true,
        Some("number") => value.is_number(),
        Some(t) => type_name(value) == t,
    }
}

fn validate(schema: &Value, value: &Value, path: &str, errors: &mut Vec<(String, String)>) {
    if !type_ok(schema, value) {
        let want = if flag(schema, "x-kubernetes-int-or-string") {
            "integer or string"
        } else {
            schema.get("type").and_then(Value::as_str).unwrap_or("?")
        };
        errors.push((
            path.to_string(),
            format!(
                "Invalid value: \"{}\": {path} in body must be of type {want}: \"{}\"",
                type_name(value),
                type_name(value)
            ),
        ));
        return;
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !value.is_null()
        && !allowed.contains(value)
    {
        let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
        errors.push((
            path.to_string(),
            format!(
                "Unsupported value: {value}: supported values: {}",
                list.join(", ")
            ),
        ));
    }
    match value {
        Value::Object(map) => {
            if flag(schema, "x-kubernetes-embedded-resource") {
                for k in ["apiVersion", "kind"] {
                    if map.get(k).and_then(Value::as_str).is_none_or(str::is_empty) {
                        errors.push((
                            format!("{path}.{k}"),
                            "Required value: must not be empty".to_string(),
                        ));
                    }
                }
            }
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            for (k, v) in map {
                let child = format!("{path}.{k}");
                if let Some(s) = props.and_then(|p| p.get(k)) {
                    validate(s, v, &child, errors);
                } else if let Some(s) = additional {
                    validate(s, v, &child, errors);
                }
            }
            required(schema, map, path, errors);
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    validate(item_schema, item, &format!("{path}[{i}]"), errors);
                }
            }
        }
        _ => {}
    }
}

fn required(
    schema: &Value,
    map: &Map<String, Value>,
    path: &str,
    errors: &mut Vec<(String, String)>,
) {
    if let Some(req) = schema.get("required").and_then(Value::as_array) {
        for k in req.iter().filter_map(Value::as_str) {
            if !map.contains_key(k) {
                let field = if path.is_empty() {
                    k.to_string()
                } else {
                    format!("{path}.{k}")
                };
                errors.push((field, "Required value".to_string()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "spec": {"type": "object", "required": ["name"], "properties": {
                    "name": {"type": "string"},
                    "count": {"type": "integer", "default": 3},
                    "mode": {"type": "string", "enum": ["a", "b"]},
                    "port": {"x-kubernetes-int-or-string": true},
                    "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                    "maybe": {"type": "string", "nullable": true},
                }},
                "status": {"type": "object", "properties": {"phase": {"type": "string"}}},
            }
        })
    }

    #[test]
    fn prunes_defaults_and_keeps_what_the_schema_allows() {
        let mut o = json!({
            "apiVersion": "x/v1", "kind": "K", "metadata": {"name": "n"},
            "spec": {"name": "x", "junk": 1, "free": {"any": {"thing": 1}}, "labels": {"a": "b"},
                     "maybe": null, "mode": null, "port": "80"},
            "status": {"phase": "P", "junk": true},
            "top": 1,
        });
        let (errors, mut pruned) = admit(&schema(), &mut o);
        assert!(errors.is_empty(), "{errors:?}");
        pruned.sort();
        assert_eq!(pruned, ["spec.junk", "status.junk", "top"]);
        assert_eq!(
            o,
            json!({
                "apiVersion": "x/v1", "kind": "K", "metadata": {"name": "n"},
                "spec": {"name": "x", "count": 3, "free": {"any": {"thing": 1}}, "labels": {"a": "b"},
                         "maybe": null, "port": "80"},
                "status": {"phase": "P"},
            })
        );
    }

    #[test]
    fn metadata_is_never_pruned_even_where_the_schema_has_a_bare_metadata_node() {
        let mut s = schema();
        s["properties"]["metadata"] = json!({"type": "object"});
        let mut o = json!({"metadata": {"name": "n", "labels": {"a": "b"}}, "spec": {"name": "x"}});
        let (errors, pruned) = admit(&s, &mut o);
        assert!(
            errors.is_empty() && pruned.is_empty(),
            "{errors:?} {pruned:?}"
        );
        assert_eq!(o["metadata"], json!({"name": "n", "labels": {"a": "b"}}));
    }

    #[test]
    fn wrong_types_enums_and_missing_required_fields_are_errors() {
        let mut o =
            json!({"spec": {"count": "three", "mode": "c", "port": true, "labels": {"a": 1}}});
        let (errors, _) = admit(&schema(), &mut o);
        let fields: Vec<&str> = errors.iter().map(|(f, _)| f.as_str()).collect();
        assert!(fields.contains(&"spec.count"), "{errors:?}");
        assert!(fields.contains(&"spec.mode"), "{errors:?}");
        assert!(fields.contains(&"spec.port"), "{errors:?}");
        assert!(fields.contains(&"spec.labels.a"), "{errors:?}");
        assert!(fields.contains(&"spec.name"), "{errors:?}");
    }
}
