//! JSON merge patch (RFC 7386) and JSON patch (RFC 6902), on the `json-patch` crate.
//!
//! `application/strategic-merge-patch+json` is answered as a merge patch (see the crate
//! doc); there is no list merging by patch strategy here.

use json_patch::{Patch, PatchErrorKind};
use serde_json::Value;

/// Applies an RFC 7386 merge patch to `target` in place.
pub(crate) fn merge_patch(target: &mut Value, patch: &Value) {
    json_patch::merge(target, patch);
}

/// Why a JSON patch could not be applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum JsonPatchError {
    /// The patch document itself is malformed (HTTP 400).
    Malformed(String),
    /// The patch is well formed but cannot be applied, e.g. a failed `test` (HTTP 422).
    Unprocessable(String),
}

/// Applies an RFC 6902 JSON patch. The document is left untouched on error.
///
/// A body that does not decode as a list of operations (not an array, an unknown `op`, a
/// missing `path`/`value`/`from`, a pointer without a leading `/`) is `Malformed`; a patch
/// whose operations cannot be applied (a failed `test`, a missing path, an array index out
/// of bounds, a move into its own child) is `Unprocessable`, as the API server answers.
pub(crate) fn json_patch(doc: &mut Value, patch: Value) -> Result<(), JsonPatchError> {
    if !patch.is_array() {
        return Err(JsonPatchError::Malformed(
            "a JSON patch must be an array of operations".into(),
        ));
    }
    let ops: Patch = serde_json::from_value(patch)
        .map_err(|e| JsonPatchError::Malformed(format!("invalid JSON patch: {e}")))?;
    json_patch::patch(doc, &ops).map_err(|e| {
        JsonPatchError::Unprocessable(match e.kind {
            PatchErrorKind::TestFailed => format!("testing value {} failed", e.path),
            _ => e.to_string(),
        })
    })
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
            json!([
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
            json!([{"op": "replace", "path": "/a", "value": 5}, {"op": "test", "path": "/a", "value": 1}]),
        )
        .unwrap_err();
        assert_eq!(
            err,
            JsonPatchError::Unprocessable("testing value /a failed".into())
        );
        assert_eq!(d, json!({"a": 1}));
        for unprocessable in [
            json!([{"op": "remove", "path": "/zz"}]),
            json!([{"op": "add", "path": "/a/b", "value": 1}]),
            json!([{"op": "copy", "from": "/zz", "path": "/b"}]),
            json!([{"op": "move", "from": "", "path": "/b"}]),
        ] {
            assert!(
                matches!(
                    json_patch(&mut d, unprocessable.clone()),
                    Err(JsonPatchError::Unprocessable(_))
                ),
                "{unprocessable}"
            );
            assert_eq!(d, json!({"a": 1}));
        }
        let mut arr = json!({"l": [1]});
        for unprocessable in [
            json!([{"op": "add", "path": "/l/2", "value": 1}]),
            json!([{"op": "remove", "path": "/l/01"}]),
            json!([{"op": "replace", "path": "/l/-", "value": 1}]),
        ] {
            assert!(
                matches!(
                    json_patch(&mut arr, unprocessable.clone()),
                    Err(JsonPatchError::Unprocessable(_))
                ),
                "{unprocessable}"
            );
        }
        for malformed in [
            json!({"op": "add"}),
            json!([{"op": "frobnicate", "path": "/a"}]),
            json!([{"op": "add", "path": "/a"}]),
            json!([{"op": "remove"}]),
            json!([{"op": "add", "path": "a", "value": 1}]),
            json!(["add"]),
        ] {
            assert!(
                matches!(
                    json_patch(&mut d, malformed.clone()),
                    Err(JsonPatchError::Malformed(_))
                ),
                "{malformed}"
            );
        }
    }
}
