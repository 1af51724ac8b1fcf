//! cty msgpack checked against the real go-cty (`tools/ctyenc`): the protocol doc's §4
//! example, numbers of every wire form, sets (primitive and block sets) and the dynamic
//! `[typeJSON, value]` wrapper. Fixtures and committed outputs live in `tests/cty_golden/`;
//! `tools/ctyenc/regen.sh` regenerates them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use nomad_plugin::cty::{self, Number, Reader, Type, Value};
use nomad_plugin::hclspec::{self, parse_literal};
use nomad_plugin::proto::hclspec::Spec;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cty_golden")
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run tools/ctyenc/regen.sh to generate the golden files",
            path.display()
        )
    })
}

fn committed(name: &str) -> Vec<u8> {
    read(&fixtures().join(name))
}

/// Builds the Rust spec from a fixture's JSON spec, the inverse of `hclspec::to_json`, so the
/// test also checks that our JSON form round-trips.
fn spec_from_json(json: &serde_json::Value) -> Spec {
    let (kind, body) = json
        .as_object()
        .and_then(|o| o.iter().next())
        .expect("one key per spec node");
    let text = |key: &str| body[key].as_str().unwrap_or_default().to_owned();
    let flag = |key: &str| body[key].as_bool().unwrap_or(false);
    let count = |key: &str| body[key].as_u64().unwrap_or(0);
    match kind.as_str() {
        "object" => hclspec::object(
            body.as_object()
                .expect("object body")
                .iter()
                .map(|(k, v)| (k.clone(), spec_from_json(v))),
        ),
        "attr" => hclspec::attr(&text("name"), &text("type"), flag("required")),
        "block_list" => hclspec::block_list(
            &text("name"),
            count("min_items"),
            count("max_items"),
            spec_from_json(&body["nested"]),
        ),
        "block_set" => hclspec::block_set(
            &text("name"),
            count("min_items"),
            count("max_items"),
            spec_from_json(&body["nested"]),
        ),
        other => panic!("fixture uses an unexpected spec kind {other}"),
    }
}

fn fixture_spec(name: &str) -> Spec {
    let json: serde_json::Value =
        serde_json::from_slice(&committed(&format!("{name}.spec.json"))).expect("spec JSON");
    let spec = spec_from_json(&json);
    assert_eq!(
        hclspec::to_json(&spec),
        json,
        "{name}: JSON form round-trips"
    );
    spec
}

/// A temporary folder removed on drop, even when the test fails.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let path = std::env::temp_dir().join(format!("cty-golden-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).expect("temporary folder");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn build_go_tool(dir: &TempDir) -> PathBuf {
    let missing = "the golden tests need Go and go-cty: install them with \
         `apt-get install -y golang-go golang-github-zclconf-go-cty-dev \
         golang-github-hashicorp-hcl-v2-dev` (see tools/ctyenc/README.md)";
    match Command::new("go").arg("version").output() {
        Ok(out) if out.status.success() => {}
        _ => panic!("`go` is not on PATH; {missing}"),
    }
    let tool = dir.0.join("ctyenc");
    let mut build = Command::new("go");
    build
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/ctyenc"))
        .env("GO111MODULE", "off")
        .env("GOPATH", "/usr/share/gocode")
        .args(["build", "-o"])
        .arg(&tool);
    if std::env::var_os("HOME").is_none() && std::env::var_os("GOCACHE").is_none() {
        build.env("GOCACHE", dir.0.join("gocache"));
    }
    let out = build.output().expect("go build runs");
    assert!(
        out.status.success(),
        "building tools/ctyenc failed ({missing}):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    tool
}

#[test]
fn go_tool_reproduces_committed_bytes() {
    let dir = TempDir::new();
    let tool = build_go_tool(&dir);
    for name in ["example", "numbers", "block_set"] {
        let mut runs = vec![(format!("{name}.msgpack"), None)];
        let type_file = fixtures().join(format!("{name}.type"));
        if type_file.is_file() {
            let ty = String::from_utf8(read(&type_file)).expect("UTF-8");
            runs.push((format!("{name}.typed.msgpack"), Some(ty.trim().to_owned())));
        }
        for (output, ty) in runs {
            let out_file = dir.0.join("out.msgpack");
            let mut cmd = Command::new(&tool);
            cmd.arg("-spec")
                .arg(fixtures().join(format!("{name}.spec.json")))
                .arg("-config")
                .arg(fixtures().join(format!("{name}.hcl")))
                .arg("-out")
                .arg(&out_file);
            if let Some(ty) = &ty {
                cmd.arg("-type").arg(ty);
            }
            let out = cmd.output().expect("ctyenc runs");
            assert!(
                out.status.success(),
                "ctyenc failed for {name}:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                read(&out_file) == committed(&output),
                "{output}: go-cty's bytes differ from the committed file; run \
                 tools/ctyenc/regen.sh and review the change"
            );
        }
    }
}

#[test]
fn protocol_doc_example_matches_go() {
    let bytes = committed("example.msgpack");
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        hex,
        "84a461726773c0a7636f6d6d616e64a178a66c6162656c73c0a4706f72749182a56c6162656ca468747470a2746fcd1f90"
    );
    let ty = hclspec::output_type(&fixture_spec("example")).expect("typed spec");
    let value = Value::object([
        ("args", Value::Null),
        ("command", Value::string("x")),
        ("labels", Value::Null),
        (
            "port",
            Value::List(vec![Value::object([
                ("label", Value::string("http")),
                ("to", Value::number(8080i64)),
            ])]),
        ),
    ]);
    assert_eq!(cty::encode(&value), bytes);
    assert_eq!(cty::marshal(&value, &ty).expect("fits"), bytes);
}

#[test]
fn dynamic_wrapper_matches_go() {
    let bytes = committed("example.typed.msgpack");
    let ty = hclspec::output_type(&fixture_spec("example")).expect("typed spec");
    let raw = cty::decode(&committed("example.msgpack")).expect("decodes");
    let value = Reader::new(&raw).to_value(&ty).expect("fits");
    assert_eq!(cty::marshal_dynamic(&value, &ty).expect("fits"), bytes);
    // Decoding unwraps the wrapper: the result is the plain value.
    assert_eq!(cty::decode(&bytes).expect("decodes"), raw);
}

/// The right-hand side of `name = ...` in a fixture body, parsed as an HCL literal.
fn literal_attribute(body: &str, name: &str) -> Value {
    let line = body
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("{name} ")))
        .unwrap_or_else(|| panic!("fixture has no {name} attribute"));
    let (_, expression) = line.split_once('=').expect("attribute line");
    parse_literal(expression.trim())
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .0
}

#[test]
fn numbers_and_sets_match_go() {
    let body = String::from_utf8(committed("numbers.hcl")).expect("UTF-8");
    let ty = hclspec::output_type(&fixture_spec("numbers")).expect("typed spec");
    let value = Value::object([
        ("n", literal_attribute(&body, "n")),
        ("s", literal_attribute(&body, "s")),
        ("ns", literal_attribute(&body, "ns")),
        ("m", literal_attribute(&body, "m")),
        ("long", literal_attribute(&body, "long")),
    ]);
    let bytes = committed("numbers.msgpack");
    let ours = cty::marshal(&value, &ty).expect("converts");
    assert_eq!(hex(&ours), hex(&bytes));

    // Every wire form decodes back to the same numbers.
    let raw = cty::decode(&bytes).expect("decodes");
    let numbers = Reader::new(&raw)
        .field("n")
        .and_then(|n| n.items())
        .expect("list");
    let Value::List(literals) = literal_attribute(&body, "n") else {
        panic!("n is a list");
    };
    assert_eq!(numbers.len(), literals.len());
    for (reader, literal) in numbers.iter().zip(&literals) {
        let expected = match literal {
            Value::Number(n) => n.clone(),
            Value::String(s) => Number::parse(s).expect("numeric string"),
            other => panic!("unexpected literal {other:?}"),
        };
        assert_eq!(reader.number(), Ok(Some(expected)), "{}", reader.path());
    }
}

#[test]
fn block_sets_follow_cty_order() {
    let bytes = committed("block_set.msgpack");
    let ty = hclspec::output_type(&fixture_spec("block_set")).expect("typed spec");
    let item = |name: Option<&str>, n: i64, on: Option<bool>| {
        Value::object([
            ("name", name.map_or(Value::Null, Value::string)),
            ("n", Value::number(n)),
            ("on", on.map_or(Value::Null, Value::Bool)),
        ])
    };
    // In the body's order, with the duplicate: the encoder sorts and de-duplicates.
    let value = Value::object([(
        "item",
        Value::Set(vec![
            item(Some("zed"), 2, None),
            item(Some("alpha"), 10, Some(true)),
            item(Some("alpha"), 9, None),
            item(None, 1, None),
            item(Some("alpha"), 10, Some(true)),
        ]),
    )]);
    assert_eq!(hex(&cty::encode(&value)), hex(&bytes));
    assert_eq!(hex(&cty::marshal(&value, &ty).expect("fits")), hex(&bytes));
    assert_eq!(
        ty,
        Type::object([(
            "item",
            Type::set(Type::object([
                ("name", Type::String),
                ("n", Type::Number),
                ("on", Type::Bool)
            ]))
        )])
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
