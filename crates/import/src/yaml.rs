//! YAML text to a small tree that the importers walk.
//!
//! The tree is built from the parser's events, not by a recursive loader: a hostile file
//! nested thousands of levels deep must be an error, not a stack overflow, and an alias
//! must not expand into millions of nodes ("billion laughs"). A node is shared, not copied,
//! by the anchor that names it and by each alias of it, so memory stays proportional to the
//! file whatever its anchors. Scalars keep the text the user wrote (`1.10` stays `1.10`);
//! the core schema's numbers, booleans and null are recognised only when asked for, and
//! only in plain (unquoted) scalars.

use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use saphyr_parser::{Event, Parser, ScalarStyle, Tag};

/// Deeper than any Compose file or Kubernetes object needs.
const MAX_DEPTH: usize = 64;
/// Nodes that aliases may copy in one file, all aliases together.
const MAX_ALIAS_NODES: usize = 100_000;

/// A YAML node. Cloning one is cheap: its content is shared.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Node {
    Scalar(Rc<Scalar>),
    Seq(Rc<[Node]>),
    /// Entries in the order they were written; keys are unique.
    Map(Rc<[(String, Node)]>),
}

/// A scalar as written. `plain` is false for quoted and block scalars and for `!!str`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Scalar {
    pub text: String,
    pub plain: bool,
}

/// Why a file is not YAML, and where (1-based line and column).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct YamlError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl Node {
    /// Null: `~`, `null` or nothing at all, unquoted.
    pub fn is_null(&self) -> bool {
        matches!(self, Node::Scalar(s) if s.plain && matches!(s.text.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }

    /// The text of a scalar that is not null (a number or boolean included).
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Node::Scalar(s) if !self.is_null() => Some(&s.text),
            _ => None,
        }
    }

    /// An unquoted integer of the core schema (`12`, `-3`, `0x1f`, `0o17`) that fits an i64.
    pub fn as_int(&self) -> Option<i64> {
        let Node::Scalar(s) = self else { return None };
        if !s.plain {
            return None;
        }
        let t = s.text.as_str();
        if let Some(hex) = t.strip_prefix("0x") {
            return i64::from_str_radix(hex, 16).ok();
        }
        if let Some(oct) = t.strip_prefix("0o") {
            return i64::from_str_radix(oct, 8).ok();
        }
        let digits = t.strip_prefix(['-', '+']).unwrap_or(t);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        t.parse().ok()
    }

    /// An unquoted `true` or `false` (any of the core schema's spellings).
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Node::Scalar(s) if s.plain => match s.text.as_str() {
                "true" | "True" | "TRUE" => Some(true),
                "false" | "False" | "FALSE" => Some(false),
                _ => None,
            },
            _ => None,
        }
    }

    pub fn as_seq(&self) -> Option<&[Node]> {
        match self {
            Node::Seq(items) => Some(items),
            _ => None,
        }
    }

    pub fn as_map(&self) -> Option<&[(String, Node)]> {
        match self {
            Node::Map(entries) => Some(entries),
            _ => None,
        }
    }

    /// The value of `key` in a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.as_map()?
            .iter()
            .find_map(|(k, v)| (k == key).then_some(v))
    }

    /// What a user would call this node, for messages: `"8000"`, a list, a mapping.
    pub fn describe(&self) -> String {
        match self {
            Node::Scalar(_) if self.is_null() => "nothing (null)".to_owned(),
            Node::Scalar(s) => {
                let mut text: String = s.text.chars().take(60).collect();
                if text.len() < s.text.len() {
                    text.push('…');
                }
                format!("{text:?}")
            }
            Node::Seq(_) => "a list".to_owned(),
            Node::Map(_) => "a mapping".to_owned(),
        }
    }

    /// Nodes in this subtree; counting stops once it is past `limit` (the alias budget).
    fn size(&self, limit: usize) -> usize {
        let children: Vec<&Node> = match self {
            Node::Scalar(_) => return 1,
            Node::Seq(items) => items.iter().collect(),
            Node::Map(entries) => entries.iter().map(|(_, v)| v).collect(),
        };
        let mut n = 1;
        for c in children {
            if n > limit {
                break;
            }
            n += c.size(limit - n);
        }
        n
    }
}

/// Every document of `text`; an empty file has none.
pub(crate) fn parse(text: &str) -> Result<Vec<Node>, YamlError> {
    let mut b = Builder::default();
    for event in Parser::new_from_str(text) {
        let (event, span) = event.map_err(|e| YamlError {
            line: e.marker().line(),
            column: e.marker().col() + 1,
            message: e.info().to_owned(),
        })?;
        b.on_event(event).map_err(|message| YamlError {
            line: span.start.line(),
            column: span.start.col() + 1,
            message,
        })?;
    }
    Ok(b.docs)
}

#[derive(Default)]
struct Builder {
    docs: Vec<Node>,
    stack: Vec<Frame>,
    /// Each anchor's node, shared with the tree.
    anchors: HashMap<usize, Node>,
    alias_budget_used: usize,
}

enum Frame {
    Seq {
        anchor: usize,
        items: Vec<Node>,
    },
    Map {
        anchor: usize,
        entries: Vec<(String, Node)>,
        keys: HashSet<String>,
        /// The key read, waiting for its value; `true` when it is a plain `<<` (a merge).
        key: Option<(String, bool)>,
        merges: Vec<Node>,
    },
}

impl Builder {
    fn on_event(&mut self, event: Event<'_>) -> Result<(), String> {
        match event {
            Event::Scalar(text, style, anchor, tag) => {
                let plain = style == ScalarStyle::Plain && !is_str_tag(tag.as_deref());
                let plain = plain || is_non_str_core_tag(tag.as_deref());
                self.complete(
                    Node::Scalar(Rc::new(Scalar {
                        text: text.into_owned(),
                        plain,
                    })),
                    anchor,
                )
            }
            Event::SequenceStart(anchor, _) => self.open(Frame::Seq {
                anchor,
                items: Vec::new(),
            }),
            Event::MappingStart(anchor, _) => self.open(Frame::Map {
                anchor,
                entries: Vec::new(),
                keys: HashSet::new(),
                key: None,
                merges: Vec::new(),
            }),
            Event::SequenceEnd | Event::MappingEnd => match self.stack.pop() {
                Some(Frame::Seq { anchor, items }) => {
                    self.complete(Node::Seq(items.into()), anchor)
                }
                Some(Frame::Map {
                    anchor,
                    mut entries,
                    mut keys,
                    merges,
                    ..
                }) => {
                    merge(&mut entries, &mut keys, merges)?;
                    self.complete(Node::Map(entries.into()), anchor)
                }
                None => Err("unbalanced end of a collection".to_owned()),
            },
            Event::Alias(id) => {
                let node = self
                    .anchors
                    .get(&id)
                    .ok_or_else(|| "an alias names an unknown anchor".to_owned())?;
                let left = MAX_ALIAS_NODES - self.alias_budget_used;
                let size = node.size(left);
                if size > left {
                    return Err(format!(
                        "aliases expand to more than {MAX_ALIAS_NODES} nodes; refusing a \
                         \"billion laughs\" file"
                    ));
                }
                self.alias_budget_used += size;
                // Shared, not copied: the budget bounds what a reader may walk, not memory.
                let node = node.clone();
                self.complete(node, 0)
            }
            Event::DocumentEnd => {
                self.anchors.clear();
                Ok(())
            }
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentStart(_) => {
                Ok(())
            }
        }
    }

    fn open(&mut self, frame: Frame) -> Result<(), String> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(format!("nested more than {MAX_DEPTH} levels deep"));
        }
        if let Some(Frame::Map { key: None, .. }) = self.stack.last() {
            return Err("a mapping key must be a string, not a list or a mapping".to_owned());
        }
        self.stack.push(frame);
        Ok(())
    }

    /// A finished node: into its parent, or a document of its own.
    fn complete(&mut self, node: Node, anchor: usize) -> Result<(), String> {
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => self.docs.push(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map {
                entries,
                keys,
                key,
                merges,
                ..
            }) => match key.take() {
                None => {
                    let Node::Scalar(s) = node else {
                        return Err(
                            "a mapping key must be a string, not a list or a mapping".to_owned()
                        );
                    };
                    let is_merge = s.plain && s.text == "<<";
                    if !is_merge && keys.contains(&s.text) {
                        return Err(format!("duplicate key `{}`", s.text));
                    }
                    *key = Some((s.text.clone(), is_merge));
                }
                Some((_, true)) => merges.push(node),
                Some((k, false)) => {
                    keys.insert(k.clone());
                    entries.push((k, node));
                }
            },
        }
        Ok(())
    }
}

/// `<<: *base` or `<<: [*a, *b]`: the merged mappings' keys that the mapping does not set
/// itself, earlier mappings first (YAML 1.1's merge key, which Compose files use a lot).
fn merge(
    entries: &mut Vec<(String, Node)>,
    keys: &mut HashSet<String>,
    merges: Vec<Node>,
) -> Result<(), String> {
    for m in merges {
        let sources: Vec<&[(String, Node)]> = match &m {
            Node::Map(e) => vec![e],
            Node::Seq(items) => items
                .iter()
                .map(Node::as_map)
                .collect::<Option<_>>()
                .ok_or_else(|| "`<<` merges mappings only".to_owned())?,
            Node::Scalar(_) => return Err("`<<` merges mappings only".to_owned()),
        };
        for (k, v) in sources.into_iter().flatten() {
            if keys.insert(k.clone()) {
                entries.push((k.clone(), v.clone()));
            }
        }
    }
    Ok(())
}

fn is_str_tag(tag: Option<&Tag>) -> bool {
    tag.is_some_and(|t| t.is_yaml_core_schema() && t.suffix == "str")
}

fn is_non_str_core_tag(tag: Option<&Tag>) -> bool {
    tag.is_some_and(|t| {
        t.is_yaml_core_schema() && matches!(t.suffix.as_str(), "int" | "float" | "bool" | "null")
    })
}

#[cfg(test)]
mod tests;
