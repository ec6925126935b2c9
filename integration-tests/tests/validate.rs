//! `sonde validate` on real configs: the seed production configs pass; broken configs fail with
//! exit status 1 and a message naming the offending path.

use std::process::Command;

use integration_tests::{bin, shared_dir, temp_dir, write_config};

fn validate(args: &[&str]) -> (i32, String) {
    let out = Command::new(bin("sonde"))
        .arg("validate")
        .args(args)
        .output()
        .expect("run sonde");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn seed_production_configs_validate() {
    let dir = shared_dir().join("seed/production");
    for f in [
        "otel-collector-config.yml",
        "otel-collector-config.filtered.yml",
    ] {
        let p = dir.join(f);
        let (code, text) = validate(&["--config", p.to_str().unwrap()]);
        assert_eq!(code, 0, "{f}: {text}");
    }
}

#[test]
fn shipped_configs_validate() {
    let dir = integration_tests::workspace_root().join("configs");
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            let (code, text) = validate(&["--config", p.to_str().unwrap()]);
            assert_eq!(code, 0, "{}: {text}", p.display());
        }
    }
    // No --config: the embedded default.
    let (code, text) = validate(&[]);
    assert_eq!(code, 0, "{text}");
}

const GOOD: &str = r#"
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:4317
processors:
  batch:
exporters:
  otlp:
    endpoint: collector.example:4317
    tls:
      insecure: true
service:
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [otlp]
"#;

#[test]
fn broken_configs_fail_naming_the_path() {
    let dir = temp_dir("validate");
    let ok = write_config(&dir, "ok.yaml", GOOD);
    let (code, text) = validate(&["--config", ok.to_str().unwrap()]);
    assert_eq!(code, 0, "{text}");

    let cases = [
        (
            GOOD.replace("insecure: true", "insecur: true"),
            "'exporters::otlp::tls' has invalid keys: insecur",
        ),
        (
            GOOD.replace("  batch:\n", "  bacth:\n"),
            "unknown type: \"bacth\" for id: \"bacth\"",
        ),
        (
            GOOD.replace("processors: [batch]", "processors: [batch/missing]"),
            "service::pipelines::traces: references processor \"batch/missing\" which is not configured",
        ),
        (
            GOOD.replace("exporters: [otlp]\n", "exporters: []\n"),
            "service::pipelines::traces: must have at least one exporter",
        ),
        (
            GOOD.replace("processors: [batch]", "processors: [batch, batch]"),
            "references processor \"batch\" multiple times",
        ),
        (GOOD.replace("service:", "servce:"), "has invalid keys: servce"),
    ];
    for (i, (yaml, want)) in cases.iter().enumerate() {
        let p = write_config(&dir, &format!("bad{i}.yaml"), yaml);
        let (code, text) = validate(&["--config", p.to_str().unwrap()]);
        assert_eq!(code, 1, "case {i} should fail: {text}");
        assert!(text.contains(want), "case {i}: want {want:?} in {text:?}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn configs_merge_and_set_apply() {
    let dir = temp_dir("merge");
    let base = write_config(&dir, "base.yaml", GOOD);
    let over = write_config(
        &dir,
        "over.yaml",
        "processors:\n  batch:\n    send_batch_size: 100\n",
    );
    let out = Command::new(bin("sonde"))
        .args(["print-config", "--config"])
        .arg(&base)
        .arg("--config")
        .arg(&over)
        .args(["--set", "processors.batch.timeout=2s"])
        .env("SONDE_TEST_ENDPOINT", "10.0.0.1:4317")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("send_batch_size: 100"), "{text}");
    assert!(text.contains("timeout: 2s"), "{text}");
    assert!(text.contains("endpoint: collector.example:4317"), "{text}");

    let env_cfg = write_config(
        &dir,
        "env.yaml",
        &GOOD.replace("collector.example:4317", "${env:SONDE_TEST_ENDPOINT}"),
    );
    let out = Command::new(bin("sonde"))
        .args(["print-config", "--config"])
        .arg(&env_cfg)
        .env("SONDE_TEST_ENDPOINT", "10.0.0.1:4317")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("endpoint: 10.0.0.1:4317"), "{text}");
    let _ = std::fs::remove_dir_all(dir);
}
