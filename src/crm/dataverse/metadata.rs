//! The service's `$metadata` (CSDL XML), read once with quick-xml: which
//! entity sets there are, and the properties of each set's entity type
//! with their Edm types (inherited ones too). `columns()`, `tables()` and
//! `lethe check` answer from it, and a property's type decides how a value
//! is written in a URL ([`literal`]): a Guid bare, a String quoted with
//! `''` doubling, an integer bare.

use std::collections::{BTreeMap, HashMap};

use quick_xml::events::Event;

use crate::model::EntityKey;

#[derive(Clone, Debug, Default)]
struct TypeDef {
    base: Option<String>,
    key: Vec<String>,
    /// (name, Edm type) in document order.
    properties: Vec<(String, String)>,
}

/// What lethe needs of `$metadata`.
#[derive(Clone, Debug, Default)]
pub struct Metadata {
    /// Entity set → its entity type's short name.
    sets: BTreeMap<String, String>,
    /// Entity type short name → its definition.
    types: HashMap<String, TypeDef>,
}

/// The last segment of a qualified name (`Microsoft.Dynamics.CRM.lead`,
/// `mscrm.lead` → `lead`).
fn short(name: &str) -> &str {
    name.rsplit('.').next().unwrap_or(name)
}

impl Metadata {
    /// Reads a CSDL document. Namespace prefixes are ignored; unknown
    /// elements are skipped.
    pub fn parse(xml: &[u8]) -> Result<Metadata, String> {
        let mut reader = quick_xml::Reader::from_reader(xml);
        reader.config_mut().trim_text(true);
        let mut out = Metadata::default();
        let mut current: Option<(String, TypeDef)> = None;
        let mut in_key = false;
        let mut buf = Vec::new();
        loop {
            let event = reader
                .read_event_into(&mut buf)
                .map_err(|e| format!("$metadata is not XML: {e}"))?;
            match event {
                Event::Start(ref e) | Event::Empty(ref e) => {
                    let empty = matches!(event, Event::Empty(_));
                    let local = e.local_name();
                    let attr = |name: &str| -> Option<String> {
                        e.attributes().flatten().find_map(|a| {
                            let local = a.key.local_name();
                            let key: &str = local.as_ref();
                            (key == name).then(|| {
                                a.normalized_value(quick_xml::XmlVersion::Implicit1_0)
                                    .map(|v| v.into_owned())
                                    .unwrap_or_default()
                            })
                        })
                    };
                    let local: &str = local.as_ref();
                    match local {
                        "EntityType" => {
                            let name = attr("Name").unwrap_or_default();
                            let def = TypeDef {
                                base: attr("BaseType").map(|b| short(&b).to_string()),
                                ..TypeDef::default()
                            };
                            if empty {
                                out.types.insert(name, def);
                            } else {
                                current = Some((name, def));
                            }
                        }
                        "Key" => in_key = !empty,
                        "PropertyRef" if in_key => {
                            if let (Some((_, def)), Some(n)) = (current.as_mut(), attr("Name")) {
                                def.key.push(n);
                            }
                        }
                        "Property" => {
                            if let (Some((_, def)), Some(n), Some(t)) =
                                (current.as_mut(), attr("Name"), attr("Type"))
                            {
                                def.properties.push((n, t));
                            }
                        }
                        "EntitySet" => {
                            if let (Some(n), Some(t)) = (attr("Name"), attr("EntityType")) {
                                out.sets.insert(n, short(&t).to_string());
                            }
                        }
                        _ => {}
                    }
                }
                Event::End(ref e) => match AsRef::<str>::as_ref(&e.local_name()) {
                    "EntityType" => {
                        if let Some((name, def)) = current.take() {
                            out.types.insert(name, def);
                        }
                    }
                    "Key" => in_key = false,
                    _ => {}
                },
                Event::Eof => break,
                _ => {}
            }
            buf.clear();
        }
        if out.sets.is_empty() {
            return Err("$metadata lists no entity sets".into());
        }
        Ok(out)
    }

    /// Every entity set, sorted.
    pub fn set_names(&self) -> Vec<String> {
        self.sets.keys().cloned().collect()
    }

    /// The properties of `set`'s entity type, inherited ones first, each
    /// with its Edm type; `None` when there is no such set.
    pub fn properties(&self, set: &str) -> Option<Vec<(String, String)>> {
        let mut name = self.sets.get(set)?.clone();
        let mut chain = Vec::new();
        // Base types first; a cycle or a missing base ends the walk.
        for _ in 0..16 {
            let Some(def) = self.types.get(&name) else {
                break;
            };
            chain.push(def);
            match &def.base {
                Some(b) => name = b.clone(),
                None => break,
            }
        }
        let mut out: Vec<(String, String)> = Vec::new();
        for def in chain.iter().rev() {
            for p in &def.properties {
                if !out.iter().any(|(n, _)| n == &p.0) {
                    out.push(p.clone());
                }
            }
        }
        Some(out)
    }

    /// The Edm type of `property` of `set`.
    pub fn property_type(&self, set: &str, property: &str) -> Option<String> {
        self.properties(set)?
            .into_iter()
            .find(|(n, _)| n == property)
            .map(|(_, t)| t)
    }

    /// The key properties of `set`'s entity type.
    pub fn key(&self, set: &str) -> Vec<String> {
        let mut name = match self.sets.get(set) {
            Some(n) => n.clone(),
            None => return Vec::new(),
        };
        for _ in 0..16 {
            let Some(def) = self.types.get(&name) else {
                break;
            };
            if !def.key.is_empty() {
                return def.key.clone();
            }
            match &def.base {
                Some(b) => name = b.clone(),
                None => break,
            }
        }
        Vec::new()
    }
}

/// Whether an Edm type holds integers.
pub fn is_integer(edm: &str) -> bool {
    matches!(
        edm,
        "Edm.Int16" | "Edm.Int32" | "Edm.Int64" | "Edm.Byte" | "Edm.SByte"
    )
}

/// Whether `text` is a GUID (hex digits in 8-4-4-4-12 groups).
pub fn is_guid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// `key` written as an OData literal of type `edm`, for a `$filter` or a
/// key segment: a Guid bare (lower case), a String in single quotes with
/// `'` doubled, an integer bare. `Err` when the key cannot be a value of
/// the type (it can then match nothing): the caller leaves it out.
pub fn literal(edm: &str, key: &EntityKey) -> Result<String, String> {
    match edm {
        "Edm.Guid" => {
            let text = match key {
                EntityKey::Text(t) => t.trim(),
                EntityKey::Int(_) => return Err("an integer is not a Guid".into()),
            };
            if is_guid(text) {
                Ok(text.to_ascii_lowercase())
            } else {
                Err("not a Guid".into())
            }
        }
        "Edm.String" => Ok(format!("'{}'", key.canonical().replace('\'', "''"))),
        t if is_integer(t) => match key {
            EntityKey::Int(i) => Ok(i.to_string()),
            EntityKey::Text(s) => s
                .trim()
                .parse::<i64>()
                .map(|i| i.to_string())
                .map_err(|_| "not an integer".into()),
        },
        other => Err(format!("keys of type {other} are not supported")),
    }
}

/// A string literal: `'…'` with `'` doubled.
pub fn string_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CSDL: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<edmx:Edmx Version="4.0" xmlns:edmx="http://docs.oasis-open.org/odata/ns/edmx">
  <edmx:DataServices>
    <Schema Namespace="Microsoft.Dynamics.CRM" Alias="mscrm" xmlns="http://docs.oasis-open.org/odata/ns/edm">
      <EntityType Name="crmbaseentity" Abstract="true"/>
      <EntityType Name="lead" BaseType="mscrm.crmbaseentity">
        <Key><PropertyRef Name="leadid"/></Key>
        <Property Name="leadid" Type="Edm.Guid"/>
        <Property Name="emailaddress1" Type="Edm.String" MaxLength="100"/>
        <Property Name="modifiedon" Type="Edm.DateTimeOffset" Precision="0"/>
        <Property Name="_parentaccountid_value" Type="Edm.Guid"/>
        <Property Name="versionnumber" Type="Edm.Int64"/>
        <NavigationProperty Name="parentaccountid" Type="mscrm.account"/>
      </EntityType>
      <EntityType Name="code">
        <Key><PropertyRef Name="code"/></Key>
        <Property Name="code" Type="Edm.String"/>
      </EntityType>
      <EntityContainer Name="System">
        <EntitySet Name="leads" EntityType="Microsoft.Dynamics.CRM.lead"/>
        <EntitySet Name="codes" EntityType="mscrm.code"/>
      </EntityContainer>
    </Schema>
  </edmx:DataServices>
</edmx:Edmx>"#;

    #[test]
    fn sets_properties_and_keys_come_from_the_document() {
        let m = Metadata::parse(CSDL.as_bytes()).unwrap();
        assert_eq!(m.set_names(), vec!["codes", "leads"]);
        let props = m.properties("leads").unwrap();
        let names: Vec<&str> = props.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            vec![
                "leadid",
                "emailaddress1",
                "modifiedon",
                "_parentaccountid_value",
                "versionnumber"
            ]
        );
        assert_eq!(
            m.property_type("leads", "leadid").as_deref(),
            Some("Edm.Guid")
        );
        assert_eq!(
            m.property_type("leads", "parentaccountid"),
            None,
            "navigation is no column"
        );
        assert_eq!(m.key("leads"), vec!["leadid"]);
        assert_eq!(m.key("codes"), vec!["code"]);
        assert!(m.properties("lead").is_none(), "a type name is not a set");
        assert!(Metadata::parse(b"<x/>").is_err());
        assert!(Metadata::parse(b"<a><b></a>").is_err());
    }

    #[test]
    fn key_literals_follow_the_edm_type() {
        let g = EntityKey::Text("6F1C5B0E-3B8A-4C1E-9D55-0A1B2C3D4E5F".into());
        assert_eq!(
            literal("Edm.Guid", &g).unwrap(),
            "6f1c5b0e-3b8a-4c1e-9d55-0a1b2c3d4e5f"
        );
        // Nothing but a Guid goes into a URL bare.
        assert!(literal("Edm.Guid", &EntityKey::Text("1) or (1 eq 1".into())).is_err());
        assert!(literal("Edm.Guid", &EntityKey::Int(7)).is_err());
        assert_eq!(
            literal("Edm.String", &EntityKey::Text("O'Brien".into())).unwrap(),
            "'O''Brien'"
        );
        assert_eq!(literal("Edm.String", &EntityKey::Int(18)).unwrap(), "'18'");
        assert_eq!(literal("Edm.Int64", &EntityKey::Int(-3)).unwrap(), "-3");
        assert_eq!(
            literal("Edm.Int32", &EntityKey::Text("018".into())).unwrap(),
            "18"
        );
        assert!(literal("Edm.Int32", &EntityKey::Text("x".into())).is_err());
        assert!(literal("Edm.Binary", &EntityKey::Int(1)).is_err());
        assert_eq!(string_literal("it's"), "'it''s'");
        assert!(is_guid("00000000-0000-0000-0001-000000000012"));
        assert!(!is_guid("00000000-0000-0000-0001-00000000001g"));
    }
}
