//! `docs/stash-fields.md` accounts for every `spec` field of every Stash CRD stashless
//! reads (`infra/crds/stash/*.yaml`): one table per kind, under a `## <Kind>` heading, with
//! columns `field | stashless | how / why` and one of three verdicts per row.
//!
//! Checked here: every `spec` path of the schemas (properties and array items, every
//! version) is covered by a row of its kind (a row covers its path and everything below);
//! every row names a path the schema has; verdicts are `honoured`, `refused` or
//! `not applicable`; a row does not repeat the verdict of the nearest row above it in the
//! tree (deeper rows only where the verdict changes); the `## Totals` table matches the rows;
//! and the `## To refuse in code` table lists exactly the refused rows that point to it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;

const VERDICTS: [&str; 3] = ["honoured", "refused", "not applicable"];
const FIELD_HEADER: [&str; 3] = ["field", "stashless", "how / why"];
const TOTALS_HEADER: [&str; 5] = ["kind", "honoured", "refused", "not applicable", "rows"];
const TO_REFUSE_HEADER: [&str; 3] = ["kind", "field", "proposed reason"];
const TOTALS: &str = "Totals";
const TO_REFUSE: &str = "To refuse in code";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The `spec` paths of one kind: every node, and the leaves (nodes with neither
/// properties nor items), which are the ones a row must cover.
#[derive(Default, Debug)]
struct Paths {
    all: BTreeSet<String>,
    leaves: BTreeSet<String>,
}

fn walk(schema: &Value, path: String, out: &mut Paths) {
    let props = schema
        .get("properties")
        .and_then(Value::as_object)
        .filter(|p| !p.is_empty());
    let items = schema.get("items").filter(|i| i.is_object());
    if props.is_none() && items.is_none() {
        out.leaves.insert(path.clone());
    }
    for (k, v) in props.into_iter().flatten() {
        walk(v, format!("{path}.{k}"), out);
    }
    if let Some(items) = items {
        walk(items, format!("{path}[]"), out);
    }
    out.all.insert(path);
}

/// Kind → its `spec` paths, from every CRD YAML in `infra/crds/stash/`, all versions.
fn schemas() -> BTreeMap<String, Paths> {
    let dir = repo_root().join("infra/crds/stash");
    let mut out: BTreeMap<String, Paths> = BTreeMap::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let crd: Value = serde_saphyr::from_str(&text)
            .unwrap_or_else(|e| panic!("{} does not parse: {e}", file.display()));
        let kind = crd["spec"]["names"]["kind"]
            .as_str()
            .unwrap_or_else(|| panic!("{}: no spec.names.kind", file.display()))
            .to_string();
        let paths = out.entry(kind.clone()).or_default();
        let versions = crd["spec"]["versions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for v in &versions {
            let spec = &v["schema"]["openAPIV3Schema"]["properties"]["spec"];
            if spec.is_object() {
                walk(spec, "spec".into(), paths);
            }
        }
        assert!(
            !paths.leaves.is_empty(),
            "{}: no spec schema in any version",
            file.display()
        );
    }
    out
}

/// The cells of a Markdown table row (`| a | b |`), split on unescaped `|`, trimmed.
fn cells(line: &str) -> Vec<String> {
    let inner = line.trim();
    let inner = inner.strip_prefix('|').unwrap_or(inner);
    let inner = inner.strip_suffix('|').unwrap_or(inner);
    let mut out = vec![String::new()];
    let mut escaped = false;
    for c in inner.chars() {
        match c {
            '|' if !escaped => out.push(String::new()),
            _ => out.last_mut().unwrap().push(c),
        }
        escaped = c == '\\' && !escaped;
    }
    out.iter().map(|c| c.trim().to_string()).collect()
}

fn is_separator(line: &str) -> bool {
    let t = line.trim();
    t.starts_with('|') && t.contains('-') && t.chars().all(|c| matches!(c, '|' | '-' | ':' | ' '))
}

fn unquote(cell: &str) -> String {
    cell.trim().trim_matches('`').trim().to_string()
}

/// One table row: its 1-based line and cells. Headers and separators are not rows.
#[derive(Debug, Clone)]
struct Line {
    no: usize,
    cells: Vec<String>,
}

/// Heading (`## x`) → the rows of the tables under it, and each table's header.
#[derive(Default, Debug)]
struct Section {
    headers: Vec<(usize, Vec<String>)>,
    rows: Vec<Line>,
}

fn sections(doc: &str) -> BTreeMap<String, Section> {
    let lines: Vec<&str> = doc.lines().collect();
    let mut out: BTreeMap<String, Section> = BTreeMap::new();
    let mut heading = String::new();
    for (i, line) in lines.iter().enumerate() {
        if let Some(h) = line.strip_prefix("## ") {
            heading = h.trim().to_string();
            continue;
        }
        if !line.trim_start().starts_with('|') || is_separator(line) {
            continue;
        }
        let section = out.entry(heading.clone()).or_default();
        let line_cells = cells(line);
        if lines.get(i + 1).is_some_and(|next| is_separator(next)) {
            section.headers.push((i + 1, line_cells));
        } else {
            section.rows.push(Line {
                no: i + 1,
                cells: line_cells,
            });
        }
    }
    out
}

fn covers(row: &str, path: &str) -> bool {
    path == row
        || path
            .strip_prefix(row)
            .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
}

/// Everything wrong with `doc` against `schemas`, one line each.
fn problems(schemas: &BTreeMap<String, Paths>, doc: &str) -> Vec<String> {
    let sections = sections(doc);
    let mut problems = Vec::new();
    // kind → field → (verdict, how / why)
    let mut tables: BTreeMap<&str, BTreeMap<String, (String, String)>> = BTreeMap::new();

    for (kind, paths) in schemas {
        let Some(section) = sections.get(kind.as_str()) else {
            problems.push(format!("{kind}: no `## {kind}` section"));
            continue;
        };
        for (no, header) in &section.headers {
            if header != &FIELD_HEADER {
                problems.push(format!(
                    "line {no}: {kind} table header is {header:?}, want {FIELD_HEADER:?}"
                ));
            }
        }
        let rows = tables.entry(kind.as_str()).or_default();
        for Line { no, cells } in &section.rows {
            let [field, verdict, why] = cells.as_slice() else {
                problems.push(format!(
                    "line {no}: {kind} row has {} cells, want 3",
                    cells.len()
                ));
                continue;
            };
            let field = unquote(field);
            if !VERDICTS.contains(&verdict.as_str()) {
                problems.push(format!(
                    "line {no}: {kind} {field}: verdict {verdict:?} is not one of {VERDICTS:?}"
                ));
            }
            if why.is_empty() {
                problems.push(format!("line {no}: {kind} {field}: no how / why"));
            }
            if !paths.all.contains(&field) {
                problems.push(format!(
                    "line {no}: {kind} {field}: not a spec path of the CRD (stale row?)"
                ));
            }
            if rows
                .insert(field.clone(), (verdict.clone(), why.clone()))
                .is_some()
            {
                problems.push(format!("line {no}: {kind} {field}: listed twice"));
            }
        }
        // Deeper rows only where the verdict changes.
        for (field, (verdict, _)) in rows.iter() {
            let nearest = rows
                .iter()
                .filter(|(f, _)| *f != field && covers(f, field))
                .max_by_key(|(f, _)| f.len());
            if let Some((above, (v, _))) = nearest
                && v == verdict
            {
                problems.push(format!(
                    "{kind} {field}: repeats the verdict of {above} ({verdict}); drop the row"
                ));
            }
        }
        for leaf in &paths.leaves {
            if !rows.keys().any(|r| covers(r, leaf)) {
                problems.push(format!("{kind} {leaf}: no row covers it"));
            }
        }
    }
    for heading in sections.keys() {
        let named_like_kind = heading.chars().next().is_some_and(char::is_uppercase)
            && !heading.contains(' ')
            && heading != TOTALS;
        if named_like_kind && !schemas.contains_key(heading) {
            problems.push(format!(
                "section `## {heading}`: no such kind in infra/crds/stash"
            ));
        }
    }

    // Totals.
    let count = |rows: &BTreeMap<String, (String, String)>, verdict: &str| {
        rows.values().filter(|(v, _)| v == verdict).count()
    };
    let mut want: BTreeMap<String, [usize; 4]> = BTreeMap::new();
    let mut all = [0usize; 4];
    for (kind, rows) in &tables {
        let mut n = [0usize; 4];
        for (i, verdict) in VERDICTS.iter().enumerate() {
            n[i] = count(rows, verdict);
        }
        n[3] = rows.len();
        for i in 0..4 {
            all[i] += n[i];
        }
        want.insert(kind.to_string(), n);
    }
    want.insert("all".into(), all);
    match sections.get(TOTALS) {
        None => problems.push(format!("no `## {TOTALS}` section")),
        Some(totals) => {
            for (no, header) in &totals.headers {
                if header != &TOTALS_HEADER {
                    problems.push(format!(
                        "line {no}: totals header is {header:?}, want {TOTALS_HEADER:?}"
                    ));
                }
            }
            let mut seen = BTreeSet::new();
            for Line { no, cells } in &totals.rows {
                let kind = cells.first().cloned().unwrap_or_default();
                let have: Vec<Option<usize>> =
                    cells.iter().skip(1).map(|c| c.parse().ok()).collect();
                match want.get(&kind) {
                    None => problems.push(format!("line {no}: totals for unknown kind {kind:?}")),
                    Some(n) if have != n.map(Some) => problems.push(format!(
                        "line {no}: totals for {kind} say {:?}, the rows give {n:?} (honoured, refused, not applicable, rows)",
                        &cells[1..]
                    )),
                    Some(_) => {}
                }
                if !seen.insert(kind.clone()) {
                    problems.push(format!("line {no}: totals for {kind} given twice"));
                }
            }
            for kind in want.keys() {
                if !seen.contains(kind) {
                    problems.push(format!("totals: no row for {kind}"));
                }
            }
        }
    }

    // To refuse in code: each entry is a refused row, and each refused row pointing there
    // is an entry.
    let mut listed: BTreeSet<(String, String)> = BTreeSet::new();
    if let Some(section) = sections.get(TO_REFUSE) {
        for (no, header) in &section.headers {
            if header != &TO_REFUSE_HEADER {
                problems.push(format!(
                    "line {no}: `{TO_REFUSE}` header is {header:?}, want {TO_REFUSE_HEADER:?}"
                ));
            }
        }
        for Line { no, cells } in &section.rows {
            let [kind, field, reason] = cells.as_slice() else {
                problems.push(format!(
                    "line {no}: `{TO_REFUSE}` row has {} cells, want 3",
                    cells.len()
                ));
                continue;
            };
            let field = unquote(field);
            match tables.get(kind.as_str()).and_then(|t| t.get(&field)) {
                None => problems.push(format!(
                    "line {no}: `{TO_REFUSE}` names {kind} {field}, which has no row"
                )),
                Some((verdict, _)) if verdict != "refused" => problems.push(format!(
                    "line {no}: `{TO_REFUSE}` names {kind} {field}, whose row says {verdict}"
                )),
                Some(_) => {}
            }
            if reason.is_empty() {
                problems.push(format!("line {no}: {kind} {field}: no proposed reason"));
            }
            listed.insert((kind.clone(), field));
        }
    }
    for (kind, rows) in &tables {
        for (field, (verdict, why)) in rows {
            if verdict == "refused"
                && why.contains(TO_REFUSE)
                && !listed.contains(&(kind.to_string(), field.clone()))
            {
                problems.push(format!(
                    "{kind} {field}: points to `{TO_REFUSE}` but is not listed there"
                ));
            }
        }
    }
    problems
}

#[test]
fn every_stash_spec_field_is_in_the_table() {
    let schemas = schemas();
    let kinds: BTreeSet<&str> = schemas.keys().map(String::as_str).collect();
    let expected: BTreeSet<&str> = stashless::crds::KINDS.iter().map(|k| k.2).collect();
    assert_eq!(kinds, expected, "the CRD files and crds::KINDS disagree");
    // Guard against a walker that silently checks nothing.
    let leaves: usize = schemas.values().map(|p| p.leaves.len()).sum();
    assert!(leaves > 500, "only {leaves} spec leaves found");

    let path = repo_root().join("docs/stash-fields.md");
    let doc = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let problems = problems(&schemas, &doc);
    assert!(
        problems.is_empty(),
        "docs/stash-fields.md does not match infra/crds/stash ({} problems):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn the_checker_catches_gaps_stale_rows_bad_verdicts_and_wrong_totals() {
    let mut paths = Paths::default();
    let schema = serde_json::json!({"properties": {
        "a": {"properties": {"b": {"type": "string"}, "c": {"type": "integer"}}},
        "l": {"type": "array", "items": {"properties": {"x": {"type": "string"}}}},
        "z": {"type": "boolean"},
    }});
    walk(&schema, "spec".into(), &mut paths);
    assert_eq!(
        paths.leaves.iter().map(String::as_str).collect::<Vec<_>>(),
        ["spec.a.b", "spec.a.c", "spec.l[].x", "spec.z"]
    );
    let schemas = BTreeMap::from([("Kind".to_string(), paths)]);
    let doc = |rows: &str, totals: &str| {
        format!(
            "# t\n\n## Totals\n\n| kind | honoured | refused | not applicable | rows |\n|---|---|---|---|---|\n{totals}\n\n## Kind\n\n| field | stashless | how / why |\n|---|---|---|\n{rows}\n\n## To refuse in code\n\n| kind | field | proposed reason |\n|---|---|---|\n| Kind | `spec.z` | \"spec.z is set\" |\n"
        )
    };
    let good_rows = "| `spec.a` | honoured | read |\n| `spec.a.c` | not applicable | no pod |\n| `spec.l` | honoured | read |\n| `spec.z` | refused | see To refuse in code |";
    let good_totals = "| Kind | 2 | 1 | 1 | 4 |\n| all | 2 | 1 | 1 | 4 |";
    assert_eq!(
        problems(&schemas, &doc(good_rows, good_totals)),
        Vec::<String>::new()
    );

    let bad_rows = "| `spec.a.b` | honoured | read |\n| `spec.l[].x` | ignored | hm |\n| `spec.gone` | refused | was there |\n| `spec.z` | refused | see To refuse in code |";
    let found = problems(&schemas, &doc(bad_rows, good_totals)).join("\n");
    for want in [
        "spec.a.c: no row covers it",
        "verdict \"ignored\"",
        "spec.gone: not a spec path",
        "totals for Kind say",
    ] {
        assert!(found.contains(want), "missing {want:?} in:\n{found}");
    }

    // A deeper row with the same verdict, and a pointer to an unlisted refusal.
    let redundant = "| `spec.a` | honoured | read |\n| `spec.a.b` | honoured | read |\n| `spec.a.c` | refused | see To refuse in code |\n| `spec.l` | honoured | read |\n| `spec.z` | refused | see To refuse in code |";
    let totals = "| Kind | 3 | 2 | 0 | 5 |\n| all | 3 | 2 | 0 | 5 |";
    let found = problems(&schemas, &doc(redundant, totals)).join("\n");
    assert!(found.contains("spec.a.b: repeats the verdict"), "{found}");
    assert!(
        found.contains("spec.a.c: points to `To refuse in code`"),
        "{found}"
    );
}
