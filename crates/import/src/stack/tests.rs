use super::*;

#[test]
fn values_are_quoted_by_toml_and_the_file_reads_back() {
    let mut env = BTreeMap::new();
    env.insert("QUOTE".to_owned(), "say \"hi\"\\n".to_owned());
    env.insert("WITH SPACE".to_owned(), "line\nbreak".to_owned());
    let s = Service {
        name: "web".to_owned(),
        run: vec![
            "sh".into(),
            "-c".into(),
            "echo 'a' \"b\" $X".into(),
            String::new(),
        ],
        replicas: Some(2),
        restart: Some(Restart::OnFailure),
        env,
        stop_grace: Some(Duration::from_secs(90)),
        readiness: Some(Probe {
            period: Some(Duration::from_millis(1500)),
            ..Probe::new(ProbeAction::Http("/health?x=\"1\"".into()))
        }),
        listen: Some("127.0.0.1:8080".into()),
        ..Service::default()
    };
    let text = render(&["from a\nfile".to_owned()], &[s]).unwrap();
    assert!(text.starts_with("# from a?file\n"), "{text}");
    let doc: toml::Table = text.parse().unwrap_or_else(|e| panic!("{e}\n{text}"));
    let web = &doc["services"]["web"];
    assert_eq!(web["run"][2].as_str(), Some("echo 'a' \"b\" $X"));
    assert_eq!(web["run"][3].as_str(), Some(""));
    assert_eq!(web["env"]["QUOTE"].as_str(), Some("say \"hi\"\\n"));
    assert_eq!(web["env"]["WITH SPACE"].as_str(), Some("line\nbreak"));
    assert_eq!(web["stop_grace"].as_str(), Some("1m 30s"));
    assert_eq!(web["restart"].as_str(), Some("on-failure"));
    assert_eq!(web["readiness"]["http"].as_str(), Some("/health?x=\"1\""));
    assert_eq!(web["readiness"]["period"].as_str(), Some("1s 500ms"));
    assert_eq!(web["expose"]["listen"].as_str(), Some("127.0.0.1:8080"));
    // And bulwark's own loader takes it.
    spec::parse(&text, std::path::Path::new("stack.toml"))
        .unwrap_or_else(|e| panic!("{e}\n{text}"));
}

#[test]
fn names_are_made_valid_and_unique() {
    let mut names = Names::default();
    for (wanted, got) in [
        ("web", "web"),
        ("web", "web-2"),
        ("api.v1", "api-v1"),
        ("1st", "s1st"),
        ("_x", "s_x"),
        ("", "s"),
        ("dé", "d-"),
        ("api-v1", "api-v1-2"),
    ] {
        assert_eq!(names.claim(wanted), got, "{wanted}");
    }
}
