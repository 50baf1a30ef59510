//! Does the config fit the CRM? Every table and column the config names is
//! looked up in the CRM's own catalogue (SQLite `pragma_table_info`,
//! PostgreSQL `pg_attribute` through `to_regclass`, MariaDB
//! `information_schema`), and every `keep_if … where` condition is compiled
//! on its table. A name that is not there is a problem at the config key
//! that wrote it — file:line, the table's real columns, a "did you mean" —
//! never a query that reads a literal where it meant a column.
//!
//! `check`, `plan`, `sweep` and the service's readiness all go through
//! [`fit`]; a config that does not fit is a config error (exit 2).

use std::collections::BTreeMap;

use super::{Crm, CrmError};
use crate::config::{Config, Problem, Seg, closest};

/// One column as the catalogue lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    /// The column holds integers (so `lead:018` means key 18).
    pub integer: bool,
    /// The column is of the server's UUID type (PostgreSQL `uuid`, MariaDB
    /// `UUID`): its keys are read and stored in the text the server prints
    /// (`lead:A0EEBC99-…` means `lead:a0eebc99-…`).
    pub uuid: bool,
    /// The column's type when lethe cannot read a key from it (binary,
    /// exact decimal): as a key or foreign key it is refused, never read
    /// as nothing.
    pub unkeyed: Option<String>,
}

/// What the fit found: the problems, and the key columns' kinds.
#[derive(Debug, Default)]
pub struct Fit {
    pub problems: Vec<Problem>,
    /// Per entity type: its key column holds integers.
    pub integer_keys: BTreeMap<String, bool>,
}

/// How the backend compares names: SQLite and MySQL match column names
/// without regard to case; PostgreSQL (lethe quotes every name) and
/// Dataverse (OData names are case-sensitive) exactly.
pub(crate) fn same(kind: &str, a: &str, b: &str) -> bool {
    if kind == "postgres" || kind == "dataverse" {
        a == b
    } else {
        a.eq_ignore_ascii_case(b)
    }
}

fn list(names: &[&str]) -> String {
    const SHOWN: usize = 40;
    let mut s = names
        .iter()
        .take(SHOWN)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        s.push_str(&format!(", … ({} in all)", names.len()));
    }
    s
}

/// Checks every configured table, column and keep condition against `crm`.
/// `Err` only when the CRM could not be asked; names that are not there
/// come back as problems.
pub async fn fit(config: &Config, crm: &dyn Crm) -> Result<Fit, CrmError> {
    let kind = crm.kind();
    let mut out = Fit::default();
    let mut columns_of: BTreeMap<String, Vec<Column>> = BTreeMap::new();
    for et in &config.entities {
        let at = |k: &str| {
            vec![
                Seg::from("crm"),
                Seg::from("entities"),
                Seg::from(&et.name),
                Seg::from(k),
            ]
        };
        let Some(columns) = crm.columns(&et.table).await? else {
            let tables = crm.tables(&et.table).await?;
            let names: Vec<&str> = tables.iter().map(String::as_str).collect();
            let hint = closest(&et.table, names.iter().copied())
                .map(|c| format!(" did you mean `{c}`?"))
                .unwrap_or_default();
            let listed = if names.is_empty() {
                "none".to_string()
            } else {
                list(&names)
            };
            out.problems.push(config.problem(
                at("table"),
                format!(
                    "the CRM ({kind}) has no table `{}`;{hint} its tables: {listed}",
                    et.table
                ),
            ));
            continue;
        };
        let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
        let need = |path: Vec<Seg>, column: &str, role: &str, out: &mut Fit| -> Option<usize> {
            match columns.iter().position(|c| same(kind, &c.name, column)) {
                Some(i) => Some(i),
                None => {
                    let hint = closest(column, names.iter().copied())
                        .map(|c| format!(" did you mean `{c}`?"))
                        .unwrap_or_default();
                    out.problems.push(config.problem(
                        path,
                        format!(
                            "table `{}` has no column `{column}` (the {role});{hint} its columns: {}",
                            et.table,
                            list(&names)
                        ),
                    ));
                    None
                }
            }
        };
        // A key or foreign key of a type lethe cannot read a key from.
        let keyable = |path: Vec<Seg>, i: usize, out: &mut Fit| {
            if let Some(ty) = &columns[i].unkeyed {
                out.problems.push(config.problem(
                    path,
                    format!(
                        "column `{}` of table `{}` is of type {ty}, which lethe cannot read keys from (keys are integers, text or UUIDs); name a view that casts it to text",
                        columns[i].name, et.table
                    ),
                ));
            }
        };
        if let Some(i) = need(at("key"), &et.key, "key", &mut out) {
            out.integer_keys.insert(et.name.clone(), columns[i].integer);
            keyable(at("key"), i, &mut out);
        }
        for c in &et.clock {
            need(at("clock"), c, "clock", &mut out);
        }
        for (parent, c) in &et.parents {
            let mut path = at("parent");
            path.push(Seg::from(parent));
            if let Some(i) = need(
                path.clone(),
                c,
                &format!("foreign key to {parent}"),
                &mut out,
            ) {
                keyable(path, i, &mut out);
            }
        }
        for c in &et.subject {
            need(at("subject"), c, "subject column", &mut out);
        }
        columns_of.insert(et.name.clone(), columns);
    }
    for (i, policy) in config.policies.iter().enumerate() {
        for (j, rule) in policy.keep_if.iter().enumerate() {
            let (Some(condition), Some(et)) = (&rule.condition, config.entity(&rule.entity)) else {
                continue;
            };
            let Some(columns) = columns_of.get(&et.name) else {
                continue; // its table is missing: reported above
            };
            let path = vec![
                Seg::from("policy"),
                Seg::from(i),
                Seg::from("keep_if"),
                Seg::from(j),
            ];
            let mut bad = false;
            for quoted in double_quoted(condition) {
                let is_column = columns.iter().any(|c| same(kind, &c.name, &quoted));
                let message = if kind == "mysql" {
                    // MySQL reads "x" as the string 'x' (without ANSI_QUOTES).
                    Some(format!(
                        "`\"{quoted}\"` in the condition of policy `{}` is a string on MySQL/MariaDB, not a column; write a column as {quoted} or `{quoted}`, a string as '{quoted}'",
                        policy.name
                    ))
                } else if !is_column {
                    // SQLite reads a double-quoted name that is no column as a string.
                    Some(format!(
                        "`\"{quoted}\"` in the condition of policy `{}` is not a column of table `{}`{}; its columns: {} (write strings in single quotes)",
                        policy.name,
                        et.table,
                        closest(&quoted, columns.iter().map(|c| c.name.as_str()))
                            .map(|c| format!("; did you mean `{c}`?"))
                            .unwrap_or_default(),
                        list(&columns.iter().map(|c| c.name.as_str()).collect::<Vec<_>>())
                    ))
                } else {
                    None
                };
                if let Some(m) = message {
                    out.problems.push(config.problem(path.clone(), m));
                    bad = true;
                }
            }
            if bad {
                continue;
            }
            if let Some(error) = crm.probe_condition(et, condition).await? {
                out.problems.push(config.problem(
                    path,
                    format!(
                        "the condition `{condition}` of policy `{}` does not compile on table `{}` ({kind}): {error}",
                        policy.name, et.table
                    ),
                ));
            }
        }
    }
    Ok(out)
}

/// The double-quoted names in an SQL expression (`""` inside one is a
/// quote), skipping single-quoted strings and backquoted names.
pub fn double_quoted(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\'' || c == '"' || c == '`' {
            let mut text = String::new();
            loop {
                match chars.next() {
                    None => break,
                    Some(q) if q == c => {
                        if chars.peek() == Some(&c) {
                            chars.next();
                            text.push(c);
                        } else {
                            break;
                        }
                    }
                    Some(other) => text.push(other),
                }
            }
            if c == '"' {
                out.push(text);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn double_quoted_names_skip_strings() {
        assert_eq!(
            double_quoted(r#""stage" = 'open' AND "a""b" > 1 AND 'x"y' = `z"w`"#),
            vec!["stage".to_string(), "a\"b".to_string()]
        );
        assert!(double_quoted("stage = 'it''s'").is_empty());
    }
}
