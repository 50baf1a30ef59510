//! Link rules, compiled once at load time: path patterns (`inbound/{lead}/**`)
//! and content rules (JSON, XML, CSV) selected by a glob.

use std::collections::BTreeSet;

use super::raw::RawLink;

/// A path pattern with globset-style wildcards (`*`, `?`, `**`) and captures
/// (`{type}` matches one path segment, or part of one, and yields its key).
#[derive(Clone, Debug)]
pub struct PathPattern {
    pub text: String,
    regex: regex::Regex,
    /// Entity type of each capture group, in order.
    captures: Vec<String>,
}

impl PathPattern {
    pub fn compile(text: &str, types: &BTreeSet<String>) -> Result<PathPattern, String> {
        // `s`: a key may hold a newline, and `.` must match it as any other
        // byte of a name.
        let mut re = String::from("(?s)^");
        let mut captures = Vec::new();
        let chars: Vec<char> = text.trim_start_matches('/').chars().collect();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            match c {
                '*' if chars.get(i + 1) == Some(&'*') => {
                    let at_start = i == 0 || chars[i - 1] == '/';
                    let followed = chars.get(i + 2);
                    if !at_start || !(followed.is_none() || followed == Some(&'/')) {
                        return Err(format!("`{text}`: `**` must be a whole path segment"));
                    }
                    if followed == Some(&'/') {
                        re.push_str("(?:[^/]*/)*");
                        i += 3;
                    } else {
                        re.push_str(".*");
                        i += 2;
                    }
                    continue;
                }
                '*' => re.push_str("[^/]*"),
                '?' => re.push_str("[^/]"),
                '{' => {
                    let Some(end) = chars[i..].iter().position(|c| *c == '}') else {
                        return Err(format!("`{text}`: `{{` without a closing `}}`"));
                    };
                    let name: String = chars[i + 1..i + end].iter().collect();
                    if !types.contains(&name) {
                        return Err(format!(
                            "`{text}`: `{{{name}}}` names no entity type; declared: {}",
                            types.iter().cloned().collect::<Vec<_>>().join(", ")
                        ));
                    }
                    re.push_str("([^/]+?)");
                    captures.push(name);
                    i += end + 1;
                    continue;
                }
                '[' | ']' => {
                    return Err(format!(
                        "`{text}`: character classes are not supported in path patterns"
                    ));
                }
                c => re.push_str(&regex::escape(&c.to_string())),
            }
            i += 1;
        }
        re.push('$');
        if captures.is_empty() {
            return Err(format!(
                "`{text}` captures no entity; write the key's place as {{type}}, e.g. inbound/{{lead}}/**"
            ));
        }
        let regex = regex::Regex::new(&re).map_err(|e| format!("`{text}`: {e}"))?;
        Ok(PathPattern {
            text: text.to_string(),
            regex,
            captures,
        })
    }

    /// The (type, key) pairs a path yields, or nothing when it does not match.
    pub fn matches(&self, key: &str) -> Vec<(String, String)> {
        let Some(caps) = self.regex.captures(key) else {
            return Vec::new();
        };
        self.captures
            .iter()
            .enumerate()
            .filter_map(|(i, ty)| {
                caps.get(i + 1)
                    .map(|m| (ty.clone(), m.as_str().to_string()))
            })
            .collect()
    }
}

/// An XML element path: `/Quotation/ID`, `//ID`, `/A/B/@attr`.
/// Names compare by local name: namespace prefixes are ignored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XmlPath {
    pub text: String,
    /// `None` = `//` (any number of elements in between).
    pub steps: Vec<Option<String>>,
    pub attribute: Option<String>,
}

impl XmlPath {
    pub fn parse(text: &str) -> Result<XmlPath, String> {
        if !text.starts_with('/') {
            return Err(format!(
                "`{text}`: an XML path starts with / (or // for any depth)"
            ));
        }
        let mut steps = Vec::new();
        let mut attribute = None;
        let parts: Vec<&str> = text[1..].split('/').collect();
        for (i, part) in parts.iter().enumerate() {
            if part.is_empty() {
                if i + 1 == parts.len() {
                    return Err(format!("`{text}`: ends with /"));
                }
                if steps.last() != Some(&None) {
                    steps.push(None);
                }
                continue;
            }
            if let Some(attr) = part.strip_prefix('@') {
                if i + 1 != parts.len() {
                    return Err(format!("`{text}`: an @attribute must come last"));
                }
                attribute = Some(local_name(attr).to_string());
                continue;
            }
            steps.push(Some(local_name(part).to_string()));
        }
        if steps.iter().all(|s| s.is_none()) {
            return Err(format!("`{text}`: names no element"));
        }
        Ok(XmlPath {
            text: text.to_string(),
            steps,
            attribute,
        })
    }

    /// The path written one way: local names, `//` for any depth.
    pub fn canonical(&self) -> String {
        let mut s = String::new();
        for step in &self.steps {
            s.push('/');
            if let Some(name) = step {
                s.push_str(name);
            }
        }
        if let Some(a) = &self.attribute {
            s.push_str("/@");
            s.push_str(a);
        }
        s
    }

    /// Does the element stack (local names, outermost first) match?
    pub fn matches(&self, stack: &[String]) -> bool {
        fn go(steps: &[Option<String>], stack: &[String]) -> bool {
            match (steps.first(), stack.first()) {
                (None, None) => true,
                (None, Some(_)) => false,
                (Some(None), _) => (0..=stack.len()).any(|k| go(&steps[1..], &stack[k..])),
                (Some(Some(_)), None) => false,
                (Some(Some(name)), Some(top)) => name == top && go(&steps[1..], &stack[1..]),
            }
        }
        go(&self.steps, stack)
    }
}

pub fn local_name(name: &str) -> &str {
    name.rsplit(':').next().unwrap_or(name)
}

/// One step of a streamable JSONPath (see `index::jsonstream`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    Member(String),
    Index(usize),
    Any,
}

/// The steps of `path` when it is in the streamable subset.
pub fn simple_path(path: &str) -> Option<Vec<Step>> {
    let rest = path.trim().strip_prefix('$')?;
    let chars: Vec<char> = rest.chars().collect();
    let mut steps = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '.' => {
                if chars.get(i + 1) == Some(&'.') {
                    return None; // descendant segment
                }
                if chars.get(i + 1) == Some(&'*') {
                    steps.push(Step::Any);
                    i += 2;
                    continue;
                }
                let start = i + 1;
                let mut end = start;
                while end < chars.len()
                    && (chars[end].is_alphanumeric() || chars[end] == '_' || chars[end] == '-')
                {
                    end += 1;
                }
                if end == start {
                    return None;
                }
                steps.push(Step::Member(chars[start..end].iter().collect()));
                i = end;
            }
            '[' => {
                let close = chars[i..].iter().position(|c| *c == ']')? + i;
                let inner: String = chars[i + 1..close].iter().collect();
                let inner = inner.trim();
                if inner == "*" {
                    steps.push(Step::Any);
                } else if let Ok(n) = inner.parse::<usize>() {
                    steps.push(Step::Index(n));
                } else if inner.len() >= 2
                    && ((inner.starts_with('\'') && inner.ends_with('\''))
                        || (inner.starts_with('"') && inner.ends_with('"')))
                {
                    let name = &inner[1..inner.len() - 1];
                    if name.contains(['\\', '\'', '"']) {
                        return None;
                    }
                    steps.push(Step::Member(name.to_string()));
                } else {
                    return None; // filters, slices, unions, negative indices
                }
                i = close + 1;
            }
            c if c.is_whitespace() => i += 1,
            _ => return None,
        }
    }
    Some(steps)
}

/// The record of a JSON rule (`record = "$.records[*]"`): a prefix of the
/// rule's path in the streamable subset, ending in a wildcard. Each node it
/// selects (an array element; a member, when the wildcard meets an object)
/// is one record, named by its JSON pointer (`/records/3`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JsonRecord {
    pub text: String,
    pub steps: Vec<Step>,
}

impl JsonRecord {
    /// The steps written one way (`$['records'][*]`), whatever the spelling.
    pub fn canonical(&self) -> String {
        let mut s = String::from("$");
        for step in &self.steps {
            match step {
                // `simple_path` admits no quote or backslash in a name.
                Step::Member(m) => s.push_str(&format!("['{m}']")),
                Step::Index(i) => s.push_str(&format!("[{i}]")),
                Step::Any => s.push_str("[*]"),
            }
        }
        s
    }
}

#[derive(Clone, Debug)]
pub enum ContentKind {
    Json {
        path: serde_json_path::JsonPath,
        /// `Some` when the path can be evaluated while streaming.
        steps: Option<Vec<Step>>,
        /// `None`: the rule's links are whole-file links.
        record: Option<JsonRecord>,
    },
    /// The value's path, and the record's (`None`: whole-file links). A
    /// record is named by its ordinal among the elements matching the
    /// record path, in document order (`record 0`).
    Xml(XmlPath, Option<XmlPath>),
    /// Every row is a record (`row N`, the header being row 1).
    Csv {
        column: String,
        /// `None`: detected among `,` `;` tab `|`.
        delimiter: Option<u8>,
    },
}

/// How a record path relates to the value path, in the words of an error.
const RECORD_EXAMPLE: &str = "e.g. json = \"$.records[*].lead.id\" with record = \"$.records[*]\", xml = \"/Batch/Lead/Id\" with record = \"/Batch/Lead\"";

impl ContentKind {
    /// A JSON rule: `path` (RFC 9535) and its optional `record`. Errors are
    /// (key, message), as [`compile`] reports them.
    pub fn json(
        path: &str,
        record: Option<&str>,
    ) -> Result<ContentKind, Vec<(&'static str, String)>> {
        let parsed = serde_json_path::JsonPath::parse(path)
            .map_err(|e| vec![("json", format!("`{path}` is not an RFC 9535 JSONPath: {e}"))])?;
        let steps = simple_path(path);
        let record = match record {
            None => None,
            Some(r) => {
                Some(json_record(path, steps.as_deref(), r).map_err(|m| vec![("record", m)])?)
            }
        };
        Ok(ContentKind::Json {
            path: parsed,
            steps,
            record,
        })
    }

    /// An XML rule: the element path and its optional `record`.
    pub fn xml(
        path: &str,
        record: Option<&str>,
    ) -> Result<ContentKind, Vec<(&'static str, String)>> {
        let parsed = XmlPath::parse(path).map_err(|m| vec![("xml", m)])?;
        let record = match record {
            None => None,
            Some(r) => Some(xml_record(&parsed, r).map_err(|m| vec![("record", m)])?),
        };
        Ok(ContentKind::Xml(parsed, record))
    }

    /// Names the pieces of a file this rule's records are: equal for two
    /// rules exactly when their records are the same pieces, so that a
    /// record id from one names the same bytes under the other. `None`: the
    /// rule has no records (its links are whole-file links).
    pub fn record_signature(&self) -> Option<String> {
        match self {
            ContentKind::Csv { delimiter, .. } => Some(match delimiter {
                None => "csv".to_string(),
                Some(d) => format!("csv {}", *d as char),
            }),
            ContentKind::Json { record, .. } => {
                record.as_ref().map(|r| format!("json {}", r.canonical()))
            }
            ContentKind::Xml(_, record) => {
                record.as_ref().map(|r| format!("xml {}", r.canonical()))
            }
        }
    }
}

fn json_record(
    path: &str,
    path_steps: Option<&[Step]>,
    record: &str,
) -> Result<JsonRecord, String> {
    let Some(steps) = simple_path(record) else {
        return Err(format!(
            "`{record}`: a record path is $ followed by member names, indices and wildcards (no filters, slices or ..), ending in [*]; {RECORD_EXAMPLE}"
        ));
    };
    if steps.last() != Some(&Step::Any) {
        return Err(format!(
            "`{record}` does not end in [*]: a record is each element of a repeated array; {RECORD_EXAMPLE}"
        ));
    }
    let prefix = match path_steps {
        Some(p) => p.len() > steps.len() && p.starts_with(&steps),
        // A path beyond the streamable subset: the record must be its
        // text's beginning, up to a segment boundary (segments are
        // lexically delimited, so that is a prefix of its segments).
        None => path.trim().strip_prefix(record.trim()).is_some_and(|rest| {
            let rest = rest.trim_start();
            rest.starts_with('.') || rest.starts_with('[')
        }),
    };
    if !prefix {
        return Err(format!(
            "`{record}` is not a proper prefix of the rule's path `{path}`: the record is the repeated element the path's values sit in; {RECORD_EXAMPLE}"
        ));
    }
    Ok(JsonRecord {
        text: record.to_string(),
        steps,
    })
}

fn xml_record(path: &XmlPath, record: &str) -> Result<XmlPath, String> {
    let r = XmlPath::parse(record)?;
    if r.attribute.is_some() {
        return Err(format!(
            "`{record}`: a record is an element, not an attribute; {RECORD_EXAMPLE}"
        ));
    }
    let deeper = path.steps.len() > r.steps.len()
        || (path.steps.len() == r.steps.len() && path.attribute.is_some());
    if !deeper || !path.steps.starts_with(&r.steps) {
        return Err(format!(
            "`{record}` is not a proper prefix of the rule's path `{}`: the record is the repeated element the path's values sit in; {RECORD_EXAMPLE}",
            path.text
        ));
    }
    Ok(r)
}

#[derive(Clone, Debug)]
pub enum LinkRule {
    /// An object metadata field (S3 user metadata, Azure blob metadata)
    /// holds the key.
    Metadata {
        index: usize,
        glob: globset::GlobMatcher,
        glob_text: String,
        name: String,
        entity: String,
    },
    /// A CRM column holds the object's key or URL.
    CrmColumn {
        index: usize,
        entity: String,
        column: String,
    },
    Path {
        /// Position in `[[technical.link]]`, recorded with each link.
        index: usize,
        pattern: PathPattern,
    },
    Content {
        index: usize,
        glob: globset::GlobMatcher,
        glob_text: String,
        kind: ContentKind,
        entity: String,
    },
}

impl LinkRule {
    /// The record signature of a content rule (`None` for the others).
    pub fn record_signature(&self) -> Option<String> {
        match self {
            LinkRule::Content { kind, .. } => kind.record_signature(),
            _ => None,
        }
    }

    pub fn index(&self) -> usize {
        match self {
            LinkRule::Path { index, .. }
            | LinkRule::Content { index, .. }
            | LinkRule::Metadata { index, .. }
            | LinkRule::CrmColumn { index, .. } => *index,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            LinkRule::Path { pattern, .. } => format!("path {}", pattern.text),
            LinkRule::Metadata {
                glob_text,
                name,
                entity,
                ..
            } => format!("{glob_text} metadata {name} → {entity}"),
            LinkRule::CrmColumn { entity, column, .. } => format!("crm column {entity}.{column}"),
            LinkRule::Content {
                glob_text,
                kind,
                entity,
                ..
            } => match kind {
                ContentKind::Json {
                    path, record: None, ..
                } => format!("{glob_text} json {path} → {entity}"),
                ContentKind::Json {
                    path,
                    record: Some(r),
                    ..
                } => format!("{glob_text} json {path} record {} → {entity}", r.text),
                ContentKind::Xml(p, None) => format!("{glob_text} xml {} → {entity}", p.text),
                ContentKind::Xml(p, Some(r)) => {
                    format!("{glob_text} xml {} record {} → {entity}", p.text, r.text)
                }
                ContentKind::Csv {
                    column,
                    delimiter: None,
                } => format!("{glob_text} csv {column} → {entity}"),
                // The delimiter changes the rows, and the index's rule hash
                // is made of these descriptions.
                ContentKind::Csv {
                    column,
                    delimiter: Some(d),
                } => format!(
                    "{glob_text} csv {column} delimiter {:?} → {entity}",
                    *d as char
                ),
            },
        }
    }

    /// What `lethe check` says of a JSON or XML rule without `record`: its
    /// links are whole-file links, so a file it shares between a deleted
    /// and a kept entity cannot be redacted.
    pub fn whole_file_note(&self) -> Option<String> {
        match self {
            LinkRule::Content {
                index,
                kind: ContentKind::Json { record: None, .. } | ContentKind::Xml(_, None),
                ..
            } => Some(format!(
                "technical.link[{index}] ({}): no `record`, so its links are whole-file links; a file it links to deleted and kept entities is kept whole, not redacted",
                self.describe()
            )),
            _ => None,
        }
    }
}

/// Compiles `[[technical.link]]` entry `i`; errors are (key, message).
pub fn compile(
    i: usize,
    raw: &RawLink,
    types: &BTreeSet<String>,
) -> Result<LinkRule, Vec<(&'static str, String)>> {
    let mut errs = Vec::new();
    if raw.record.is_some() && raw.json.is_none() && raw.xml.is_none() {
        errs.push((
            "record",
            if raw.csv.is_some() {
                "a CSV rule's records are its rows, always; remove `record`"
            } else {
                "only JSON and XML rules take a record; path, metadata and crm rules link whole objects"
            }
            .to_string(),
        ));
    }
    if let Some(crm) = &raw.crm {
        return crm_rule(i, raw, crm, types, errs);
    }
    if let Some(name) = &raw.metadata {
        return metadata_rule(i, raw, name, types, errs);
    }
    let content = [raw.json.is_some(), raw.xml.is_some(), raw.csv.is_some()]
        .iter()
        .filter(|b| **b)
        .count();
    if let Some(path) = &raw.path {
        return path_rule(i, raw, path, content, types, errs);
    }
    if content != 1 {
        errs.push((
            "json",
            "a link rule needs `path`, or `glob` with exactly one of `json`, `xml`, `csv`"
                .to_string(),
        ));
        return Err(errs);
    }
    content_rule(i, raw, types, errs)
}

/// The rule's `glob` (default `**`) as written and compiled.
fn glob(
    raw: &RawLink,
    errs: &mut Vec<(&'static str, String)>,
) -> (String, Option<globset::GlobMatcher>) {
    let glob_text = raw.glob.clone().unwrap_or_else(|| "**".to_string());
    let glob = globset::GlobBuilder::new(&glob_text)
        .literal_separator(true)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|e| errs.push(("glob", format!("`{glob_text}`: {e}"))))
        .ok();
    (glob_text, glob)
}

/// A `crm = "type.column"` rule: objects named by a CRM column.
fn crm_rule(
    i: usize,
    raw: &RawLink,
    crm: &str,
    types: &BTreeSet<String>,
    mut errs: Vec<(&'static str, String)>,
) -> Result<LinkRule, Vec<(&'static str, String)>> {
    let others = raw.path.is_some()
        || raw.glob.is_some()
        || raw.json.is_some()
        || raw.xml.is_some()
        || raw.csv.is_some()
        || raw.metadata.is_some()
        || raw.entity.is_some();
    if others {
        errs.push((
            "crm",
            "a crm rule stands alone: crm = \"type.column\" names the entity type and its column"
                .to_string(),
        ));
    }
    match crm.split_once('.') {
        Some((ty, column)) if types.contains(ty) && !column.is_empty() && errs.is_empty() => {
            if !column
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                errs.push(("crm", format!("`{column}` is not a plain SQL column name")));
                return Err(errs);
            }
            return Ok(LinkRule::CrmColumn {
                index: i,
                entity: ty.to_string(),
                column: column.to_string(),
            });
        }
        Some((ty, _)) if !types.contains(ty) => {
            errs.push(("crm", format!("unknown entity type `{ty}`")))
        }
        _ if errs.is_empty() => errs.push((
            "crm",
            format!("`{crm}`: write type.column, e.g. lead.source_file"),
        )),
        _ => {}
    }
    Err(errs)
}

/// A metadata rule: objects whose metadata field holds an entity key.
fn metadata_rule(
    i: usize,
    raw: &RawLink,
    name: &str,
    types: &BTreeSet<String>,
    mut errs: Vec<(&'static str, String)>,
) -> Result<LinkRule, Vec<(&'static str, String)>> {
    let (glob_text, glob) = glob(raw, &mut errs);
    if raw.path.is_some() || raw.json.is_some() || raw.xml.is_some() || raw.csv.is_some() {
        errs.push((
            "metadata",
            "a metadata rule takes glob, metadata and entity only".to_string(),
        ));
    }
    let entity = match &raw.entity {
        Some(e) if types.contains(e) => Some(e.clone()),
        Some(e) => {
            errs.push(("entity", format!("unknown entity type `{e}`")));
            None
        }
        None => {
            errs.push((
                "entity",
                "missing; name the entity type this metadata field holds keys of".to_string(),
            ));
            None
        }
    };
    match (glob, entity) {
        (Some(glob), Some(entity)) if errs.is_empty() => Ok(LinkRule::Metadata {
            index: i,
            glob,
            glob_text,
            name: name.to_ascii_lowercase(),
            entity,
        }),
        _ => Err(errs),
    }
}

/// A path rule: the entity types are the pattern's captures.
fn path_rule(
    i: usize,
    raw: &RawLink,
    path: &str,
    content: usize,
    types: &BTreeSet<String>,
    mut errs: Vec<(&'static str, String)>,
) -> Result<LinkRule, Vec<(&'static str, String)>> {
    if content > 0 || raw.glob.is_some() || raw.entity.is_some() {
        errs.push((
            "path",
            "a path rule stands alone: the entity types are the {captures}; put content rules in their own [[technical.link]]".to_string(),
        ));
    }
    match PathPattern::compile(path, types) {
        Ok(pattern) if errs.is_empty() => Ok(LinkRule::Path { index: i, pattern }),
        Ok(_) => Err(errs),
        Err(m) => {
            errs.push(("path", m));
            Err(errs)
        }
    }
}

/// A content rule: a glob with exactly one of `json`, `xml`, `csv`.
fn content_rule(
    i: usize,
    raw: &RawLink,
    types: &BTreeSet<String>,
    mut errs: Vec<(&'static str, String)>,
) -> Result<LinkRule, Vec<(&'static str, String)>> {
    let (glob_text, glob) = glob(raw, &mut errs);
    let entity = match &raw.entity {
        None => {
            errs.push((
                "entity",
                "missing; name the entity type this rule's values are keys of".to_string(),
            ));
            None
        }
        Some(e) if !types.contains(e) => {
            errs.push(("entity", format!("unknown entity type `{e}`")));
            None
        }
        Some(e) => Some(e.clone()),
    };
    let kind = if let Some(json) = &raw.json {
        ContentKind::json(json, raw.record.as_deref())
            .map_err(|e| errs.extend(e))
            .ok()
    } else if let Some(xml) = &raw.xml {
        ContentKind::xml(xml, raw.record.as_deref())
            .map_err(|e| errs.extend(e))
            .ok()
    } else {
        let column = raw.csv.clone().unwrap_or_default();
        let delimiter = match raw.delimiter.as_deref() {
            None => None,
            Some("\\t") | Some("\t") | Some("tab") => Some(b'\t'),
            Some(d) if d.len() == 1 && d.is_ascii() => Some(d.as_bytes()[0]),
            Some(d) => {
                errs.push(("delimiter", format!("`{d}` is not one ASCII character")));
                None
            }
        };
        Some(ContentKind::Csv { column, delimiter })
    };
    if raw.delimiter.is_some() && raw.csv.is_none() {
        errs.push(("delimiter", "only CSV rules take a delimiter".to_string()));
    }
    match (glob, entity, kind) {
        (Some(glob), Some(entity), Some(kind)) if errs.is_empty() => Ok(LinkRule::Content {
            index: i,
            glob,
            glob_text,
            kind,
            entity,
        }),
        _ => Err(errs),
    }
}

#[cfg(test)]
mod tests;
