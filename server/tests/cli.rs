//! The command line against a running server (issue 15): the real binary, an API token, the
//! whole flow — log in, upload a sample, start a demo job with `--yes`, watch it to the end,
//! list and download its model — with `--json` parsed, and exit codes that say what went wrong.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::TestApp;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

/// The binary under test.
const BIN: &str = env!("CARGO_BIN_EXE_lora-pipeline");

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `lora-pipeline args…` against `app`; `token` in LORA_PIPELINE_TOKEN when given, the
/// config file at `config`, `stdin` written to its standard input.
async fn cli(app: &TestApp, config: &Path, token: Option<&str>, stdin: &str, args: &[&str]) -> Run {
    let mut command = tokio::process::Command::new(BIN);
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", config.parent().unwrap())
        .env("LORA_PIPELINE_CONFIG", config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if !args.contains(&"--url") {
        command.env("LORA_PIPELINE_URL", &app.address);
    }
    if let Some(token) = token {
        command.env("LORA_PIPELINE_TOKEN", token);
    }
    let mut child = command.spawn().expect("start the CLI");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).await.unwrap();
    drop(input);
    let output = tokio::time::timeout(
        std::time::Duration::from_secs(240),
        child.wait_with_output(),
    )
    .await
    .expect("the CLI finished within 4 minutes")
    .unwrap();
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!("stdout is not JSON ({e}): {}\n{}", self.stdout, self.stderr)
        })
    }

    fn expect(self, code: i32) -> Self {
        assert_eq!(
            self.code, code,
            "exit code\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }
}

/// A signed-in user and an API token of theirs.
async fn user_with_token(app: &TestApp, email: &str) -> (reqwest::Client, String) {
    let (client, _) = app.signed_in_user(email).await;
    let created: Value = app
        .post(&client, "/api/tokens", json!({ "name": "cli" }))
        .await
        .json()
        .await
        .unwrap();
    let token = created["data"]["token"].as_str().expect("token").to_owned();
    (client, token)
}

fn sample_path(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/datasets")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

#[tokio::test]
async fn the_cli_drives_upload_training_and_download() {
    let app = TestApp::spawn().await;
    let (_, token) = user_with_token(&app, "cli@example.com").await;
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join("lora-pipeline/config.toml");

    // login: the token from standard input, checked, then saved privately.
    let login = cli(
        &app,
        &config,
        None,
        &format!("{token}\n"),
        &["login", "--url", &app.address],
    )
    .await
    .expect(0);
    assert!(login.stdout.contains("cli@example.com"), "{}", login.stdout);
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&config).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    // From here on the config file alone says where and who.

    let upload = cli(
        &app,
        &config,
        None,
        "",
        &[
            "datasets",
            "upload",
            &sample_path("openai-chat.jsonl"),
            "--json",
        ],
    )
    .await
    .expect(0)
    .json();
    assert_eq!(upload["status"], "ready", "{upload}");
    assert!(upload["total_training_pairs"].as_i64().unwrap() > 0);
    let dataset = upload["id"].as_str().unwrap().to_owned();

    let listed = cli(&app, &config, None, "", &["datasets", "list"])
        .await
        .expect(0);
    assert!(listed.stdout.contains(&dataset), "{}", listed.stdout);

    // A demo job, partial hyperparameters, no question asked.
    let created = cli(
        &app,
        &config,
        None,
        "",
        &[
            "jobs",
            "create",
            "--dataset",
            &dataset,
            "--model",
            "tiny-random-llama",
            "--preset",
            "fast",
            "--gpu",
            "local",
            "--epochs",
            "1",
            "--max-seq-len",
            "256",
            "--batch-size",
            "4",
            "--eval-fraction",
            "0.1",
            "--yes",
            "--json",
        ],
    )
    .await
    .expect(0);
    // The estimate went to standard error, the created job to standard output.
    assert!(created.stderr.contains("cost"), "{}", created.stderr);
    let created = created.json();
    let job = created["job"]["id"].as_str().unwrap().to_owned();
    assert!(
        created["adjustments"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["field"] == "hyperparameters.quantization"),
        "the local executor's plain LoRA is said: {created}"
    );

    // Watch to the end: one event per line, the last the job's completion; exit 0.
    let watched = cli(&app, &config, None, "", &["jobs", "watch", &job, "--json"])
        .await
        .expect(0);
    let events: Vec<Value> = watched
        .stdout
        .lines()
        .map(|line| serde_json::from_str(line).expect("an event per line"))
        .collect();
    let last = events.last().expect("events");
    assert_eq!(
        (&last["kind"], &last["payload"]["status"]),
        (&json!("status"), &json!("completed")),
        "{last}"
    );
    assert!(events.iter().any(|e| e["kind"] == "metrics"));
    let ids: Vec<i64> = events.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "no event twice: {ids:?}"
    );

    let shown = cli(&app, &config, None, "", &["jobs", "show", &job, "--json"])
        .await
        .expect(0)
        .json();
    assert_eq!(shown["job"]["status"], "completed");
    assert!(!shown["metrics"].as_array().unwrap().is_empty());
    let human = cli(&app, &config, None, "", &["jobs", "show", &job])
        .await
        .expect(0);
    assert!(human.stdout.contains("completed"), "{}", human.stdout);

    let models = cli(&app, &config, None, "", &["models", "list", "--json"])
        .await
        .expect(0)
        .json();
    let model = &models["models"][0];
    assert_eq!(model["job_id"], json!(job));
    let model_id = model["id"].as_str().unwrap().to_owned();

    let into = home.path().join("adapter");
    let downloaded = cli(
        &app,
        &config,
        None,
        "",
        &[
            "models",
            "download",
            &model_id,
            into.to_str().unwrap(),
            "--json",
        ],
    )
    .await
    .expect(0)
    .json();
    let files = model["files"].as_array().unwrap();
    assert!(!files.is_empty());
    for file in files {
        let name = file["name"].as_str().unwrap();
        let bytes = std::fs::read(into.join(name)).expect("downloaded file");
        assert_eq!(bytes.len() as u64, file["size"].as_u64().unwrap(), "{name}");
        use sha2::Digest;
        assert_eq!(
            hex::encode(sha2::Sha256::digest(&bytes)),
            file["sha256"].as_str().unwrap(),
            "{name}"
        );
    }
    assert_eq!(downloaded["files"].as_array().unwrap().len(), files.len());

    // Watching a job that has ended answers at once with its outcome.
    cli(&app, &config, None, "", &["jobs", "watch", &job])
        .await
        .expect(0);
}

#[tokio::test]
async fn the_cli_says_what_went_wrong_in_its_exit_code() {
    let app = TestApp::spawn().await;
    let (client, token) = user_with_token(&app, "cli-errors@example.com").await;
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join("config.toml");

    // Not signed in: no token anywhere.
    let run = cli(&app, &config, None, "", &["jobs", "list"])
        .await
        .expect(3);
    assert!(run.stderr.contains("lora-pipeline login"), "{}", run.stderr);
    // A token the server refuses.
    cli(
        &app,
        &config,
        Some("lpt_not-a-token"),
        "",
        &["jobs", "list"],
    )
    .await
    .expect(3);

    // An invalid file: 6, each problem with its line number.
    let run = cli(
        &app,
        &config,
        Some(&token),
        "",
        &[
            "datasets",
            "upload",
            &sample_path("broken-invalid-json-line.jsonl"),
        ],
    )
    .await
    .expect(6);
    assert!(run.stdout.contains("line "), "{}", run.stdout);
    assert!(run.stderr.contains("invalid"), "{}", run.stderr);

    // Unknown ids: 4.
    let missing = uuid::Uuid::new_v4().to_string();
    cli(&app, &config, Some(&token), "", &["jobs", "show", &missing])
        .await
        .expect(4);
    cli(
        &app,
        &config,
        Some(&token),
        "",
        &["models", "download", "not-an-id"],
    )
    .await
    .expect(4);

    let ready = common::ready_dataset(&app, &client, "openai-chat.jsonl").await;
    // Refused by the server (an unknown model): 5, with the field's reason.
    let run = cli(
        &app,
        &config,
        Some(&token),
        "",
        &[
            "jobs",
            "create",
            "--dataset",
            &ready,
            "--model",
            "no-such-model",
            "--gpu",
            "local",
            "--yes",
        ],
    )
    .await
    .expect(5);
    assert!(run.stderr.contains("base_model"), "{}", run.stderr);

    // Without --yes and nobody to ask: nothing starts (8).
    let run = cli(
        &app,
        &config,
        Some(&token),
        "",
        &[
            "jobs",
            "create",
            "--dataset",
            &ready,
            "--model",
            "tiny-random-llama",
            "--gpu",
            "local",
        ],
    )
    .await
    .expect(8);
    assert!(run.stderr.contains("--yes"), "{}", run.stderr);
    let jobs = cli(&app, &config, Some(&token), "", &["jobs", "list", "--json"])
        .await
        .expect(0)
        .json();
    assert_eq!(jobs["pagination"]["total"], 0, "{jobs}");

    // A cancelled job's watch exits 7.
    let job = common::start_job(&app, &client, &ready, 1).await;
    cli(&app, &config, Some(&token), "", &["jobs", "cancel", &job])
        .await
        .expect(0);
    cli(&app, &config, Some(&token), "", &["jobs", "watch", &job])
        .await
        .expect(7);

    // The server down: 1, saying it cannot be reached.
    let run = cli(
        &app,
        &config,
        Some(&token),
        "",
        &["jobs", "list", "--url", "http://127.0.0.1:9"],
    )
    .await
    .expect(1);
    assert!(run.stderr.contains("cannot reach"), "{}", run.stderr);
}
