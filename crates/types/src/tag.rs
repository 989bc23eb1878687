//! Resource tags, one type for every service: ECS, EC2 and Cloud Map all tag with a key and a
//! value (each service spells them on its wire its own way, which `api` handles).

use serde::{Deserialize, Serialize};

/// One tag. Stored records of every service read back as this: ECS requests may leave either
/// member out (its model requires neither), and each service's validation refuses an empty key.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Tag {
    #[serde(default)]
    pub key: String,
    #[serde(default)]
    pub value: String,
}

impl Tag {
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Tag {
        Tag { key: key.into(), value: value.into() }
    }
}

/// Puts `new` over `tags`: a key already present takes the new value, other keys are appended.
pub fn merge(tags: &mut Vec<Tag>, new: impl IntoIterator<Item = Tag>) {
    for tag in new {
        match tags.iter_mut().find(|t| t.key == tag.key) {
            Some(existing) => existing.value = tag.value,
            None => tags.push(tag),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_replaces_by_key_and_keeps_order() {
        let mut tags = vec![Tag::new("a", "1"), Tag::new("b", "2")];
        merge(&mut tags, [Tag::new("b", "3"), Tag::new("c", "4")]);
        assert_eq!(tags, [Tag::new("a", "1"), Tag::new("b", "3"), Tag::new("c", "4")]);
    }

    #[test]
    fn reads_every_stored_form() {
        let ecs: Tag = serde_json::from_str(r#"{"key":"team"}"#).unwrap();
        assert_eq!(ecs, Tag::new("team", ""));
        let full: Tag = serde_json::from_str(r#"{"key":"k","value":"v"}"#).unwrap();
        assert_eq!(serde_json::to_string(&full).unwrap(), r#"{"key":"k","value":"v"}"#);
    }
}
