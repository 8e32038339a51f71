use super::*;

/// Distinct list and mapping buffers reachable from `roots`: what they hold in memory,
/// whether or not an anchor, its aliases and the tree share one copy.
fn collections_in_memory<'a>(roots: impl IntoIterator<Item = &'a Node>) -> usize {
    let mut seen = HashSet::new();
    let mut todo: Vec<&Node> = roots.into_iter().collect();
    while let Some(node) = todo.pop() {
        if let Some(items) = node.as_seq() {
            if seen.insert(items.as_ptr() as usize) {
                todo.extend(items);
            }
        } else if let Some(entries) = node.as_map()
            && seen.insert(entries.as_ptr() as usize)
        {
            todo.extend(entries.iter().map(|(_, v)| v));
        }
    }
    seen.len()
}

fn one(text: &str) -> Node {
    let mut docs = parse(text).unwrap_or_else(|e| panic!("{text:?}: {e:?}"));
    assert_eq!(docs.len(), 1, "{text:?}");
    docs.remove(0)
}

fn err(text: &str) -> String {
    match parse(text) {
        Ok(docs) => panic!("{text:?} parsed: {docs:?}"),
        Err(e) => format!("{}:{}: {}", e.line, e.column, e.message),
    }
}

#[test]
fn scalars_keep_their_text_and_resolve_only_when_plain() {
    let doc = one(
        "a: 8000\nb: \"8000\"\nc: 1.10\nd: ~\ne:\nf: true\ng: 'true'\nh: 0x1f\ni: !!str 12\nj: no\nk: 99999999999999999999\n",
    );
    assert_eq!(doc.get("a").and_then(Node::as_int), Some(8000));
    assert_eq!(doc.get("b").and_then(Node::as_int), None);
    assert_eq!(doc.get("b").and_then(Node::as_str), Some("8000"));
    assert_eq!(doc.get("c").and_then(Node::as_str), Some("1.10"));
    assert!(doc.get("d").unwrap().is_null());
    assert!(doc.get("e").unwrap().is_null());
    assert_eq!(doc.get("e").and_then(Node::as_str), None);
    assert_eq!(doc.get("f").and_then(Node::as_bool), Some(true));
    assert_eq!(doc.get("g").and_then(Node::as_bool), None);
    assert_eq!(doc.get("h").and_then(Node::as_int), Some(31));
    assert_eq!(doc.get("i").and_then(Node::as_int), None);
    // YAML 1.2: `no` is a string.
    assert_eq!(doc.get("j").and_then(Node::as_bool), None);
    assert_eq!(doc.get("j").and_then(Node::as_str), Some("no"));
    // Too large for an i64: not a number, and no panic.
    assert_eq!(doc.get("k").and_then(Node::as_int), None);
}

#[test]
fn merge_keys_fill_in_what_a_mapping_does_not_set() {
    let doc = one(
        "x-base: &base\n  restart: always\n  command: a\nsvc:\n  <<: *base\n  command: b\nquoted:\n  \"<<\": 1\n",
    );
    let svc = doc.get("svc").unwrap();
    assert_eq!(svc.get("command").and_then(Node::as_str), Some("b"));
    assert_eq!(svc.get("restart").and_then(Node::as_str), Some("always"));
    assert_eq!(svc.get("<<"), None);
    assert!(doc.get("quoted").unwrap().get("<<").is_some());
    let list = one("a: &a {x: 1}\nb: &b {x: 2, y: 2}\nc:\n  <<: [*a, *b]\n");
    let c = list.get("c").unwrap();
    assert_eq!(c.get("x").and_then(Node::as_int), Some(1));
    assert_eq!(c.get("y").and_then(Node::as_int), Some(2));
}

#[test]
fn documents_are_split() {
    let docs = parse("a: 1\n---\nb: 2\n---\n").unwrap();
    assert_eq!(docs.len(), 3);
    assert!(docs[2].is_null());
    assert_eq!(parse("").unwrap(), Vec::<Node>::new());
}

#[test]
fn hostile_files_are_errors_not_panics() {
    assert_eq!(err("a: 1\na: 2\n"), "2:1: duplicate key `a`");
    assert_eq!(
        err("a: [\n"),
        "2:1: while parsing a node, did not find expected node content"
    );
    assert!(err("? [1]\n: 2\n").contains("a mapping key must be a string"));
    assert!(err("<<: 5\n").contains("`<<` merges mappings only"));
    assert!(err("a: *nope\n").contains("unknown anchor"));
    // Deep nesting, block and flow: an error, not a stack overflow.
    assert!(err(&("- ".repeat(100_000) + "x")).contains("nested more than 64 levels"));
    assert!(err(&"[".repeat(100_000)).contains("limit"));
    // A billion laughs.
    let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
    for (i, c) in ('b'..='k').enumerate() {
        let prev = char::from(b'a' + u8::try_from(i).unwrap());
        bomb.push_str(&format!(
            "{c}: &{c} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"
        ));
    }
    assert!(err(&bomb).contains("billion laughs"));
}

#[test]
fn describe_names_what_was_found() {
    assert_eq!(one("[1]").describe(), "a list");
    assert_eq!(one("{a: 1}").describe(), "a mapping");
    assert_eq!(one("~").describe(), "nothing (null)");
    assert_eq!(one("x").describe(), "\"x\"");
    assert_eq!(
        one(&"y".repeat(100)).describe(),
        format!("\"{}…\"", "y".repeat(60))
    );
}

#[test]
fn nested_anchors_are_not_copied() {
    // 58 anchors, each around the next, around 1000 small lists: copied at each anchor, they
    // would be 58 000 lists in memory (a 100 KB file of these took 220 MB).
    let depth = 58;
    let mut text = String::from("a: ");
    for i in 0..depth {
        text.push_str(&format!("&a{i} ["));
    }
    text.push_str(&vec!["[x]"; 1000].join(", "));
    text.push_str(&"]".repeat(depth));
    text.push_str("\nb: *a0\n");
    // What the builder holds when the document ends: the tree and every anchor.
    let mut b = Builder::default();
    let mut held = 0;
    for event in Parser::new_from_str(&text) {
        let (event, _) = event.unwrap();
        if event == Event::DocumentEnd {
            held = collections_in_memory(b.docs.iter().chain(b.anchors.values()));
        }
        b.on_event(event).unwrap();
    }
    // The map, the anchored lists and the 1000 lists, once each.
    assert_eq!(held, 1 + depth + 1000);
    let doc = &b.docs[0];
    assert_eq!(doc.get("a"), doc.get("b"));
}
