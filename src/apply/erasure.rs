//! The identifiers of the rows a batch deleted, turned into what the state
//! store keeps of them: the keyed hash of each normalised value and the
//! entity's pseudonym. The values themselves go no further than here.

use crate::audit::pseudonym::Pseudonymizer;
use crate::config::EntityType;
use crate::crm::ErasedValue;
use crate::state::erased::ErasedIdentifier;
use crate::verify::residual::{Fingerprint, IdentifierKind, normalise};

/// An identifier column's value is an e-mail address when it has an `@`,
/// else a phone number (digits); one that is neither is not searchable and
/// is dropped (the count says how many).
pub fn fingerprints(
    entities: &[EntityType],
    pseudo: &Pseudonymizer,
    fingerprint: &Fingerprint,
    values: &[ErasedValue],
) -> (Vec<ErasedIdentifier>, u64) {
    let mut out = Vec::with_capacity(values.len());
    let mut unsearchable = 0;
    for v in values {
        match fingerprint_one(entities, pseudo, fingerprint, v) {
            Some(r) => out.push(r),
            None if !v.value.expose().trim().is_empty() => unsearchable += 1,
            None => {}
        }
    }
    (out, unsearchable)
}

/// One value's stored form; `None` when it is not a searchable identifier.
pub fn fingerprint_one(
    entities: &[EntityType],
    pseudo: &Pseudonymizer,
    fingerprint: &Fingerprint,
    v: &ErasedValue,
) -> Option<ErasedIdentifier> {
    let et = entities.get(v.ty as usize)?;
    let raw = v.value.expose();
    let kind = if raw.contains('@') {
        IdentifierKind::Email
    } else {
        IdentifierKind::Phone
    };
    let n = normalise(kind, raw)?;
    Some(ErasedIdentifier {
        hash: fingerprint.hex(kind, &n),
        kind: kind.as_str().to_string(),
        entity: pseudo.entity(&et.name, &v.key.canonical()),
        len: Some(n.len() as u64),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::EntityKey;
    use crate::sensitive::Sensitive;

    #[test]
    fn values_become_keyed_hashes_of_their_normal_form() {
        let key = Sensitive::new(b"0123456789abcdef".to_vec());
        let pseudo = Pseudonymizer::new(key.clone());
        let fp = Fingerprint::new(&key);
        let et = EntityType {
            name: "lead".into(),
            table: "leads".into(),
            key: "id".into(),
            clock: vec![],
            parents: vec![],
            subject: vec!["email".into(), "phone".into()],
            identifiers: vec!["email".into(), "phone".into()],
        };
        let v = |column: &str, value: &str| ErasedValue {
            ty: 0,
            key: EntityKey::Int(7),
            column: column.into(),
            value: Sensitive::new(value.into()),
        };
        let (rows, unsearchable) = fingerprints(
            &[et],
            &pseudo,
            &fp,
            &[
                v("email", " Jane.Doe@Example.com "),
                v("phone", "+49 (30) 123-4567"),
                v("phone", "n/a"),
            ],
        );
        assert_eq!(unsearchable, 1);
        assert_eq!(rows.len(), 2);
        assert_eq!(
            rows[0].hash,
            fp.hex(IdentifierKind::Email, "jane.doe@example.com")
        );
        assert_eq!(rows[1].hash, fp.hex(IdentifierKind::Phone, "49301234567"));
        assert_eq!(rows[0].entity, pseudo.entity("lead", "7"));
        for r in &rows {
            assert_eq!((r.hash.len(), r.entity.len()), (64, 64), "hashes only");
        }
    }
}
