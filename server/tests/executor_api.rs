//! The local executor's HTTP API has RunPod's documented shapes (DESIGN §6.2): `/run`,
//! `/status`, `/stream`, `/cancel`, `/retry`, `/purge-queue`, `/health`, Bearer auth, 404 for
//! unknown ids. A stand-in harness keeps each case fast; the real worker runs in the flow tests.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::watch;

const KEY: &str = "executor-api-test-key";

const HARNESS: &str = r#"
import json, sys, time
job = json.loads(sys.stdin.read())
for i in range(2):
    print(json.dumps({"type": "tick", "i": i}), flush=True)
if job["input"].get("sleep"):
    time.sleep(60)
if job["input"].get("fail"):
    print(json.dumps({"__error__": {"error_type": "ValueError", "error_message": "bad", "error_traceback": "tb"}}), flush=True)
    sys.exit(1)
"#;

struct Api {
    base: String,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
    _stop: watch::Sender<bool>,
}

impl Api {
    async fn start() -> Self {
        Self::start_with(HARNESS, server::settings::WorkerUser::Same).await
    }

    async fn start_with(harness: &str, user: server::settings::WorkerUser) -> Self {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join("harness.py"), harness).expect("harness");
        let (stop, stopped) = watch::channel(false);
        let worker = server::settings::WorkerSettings {
            python: Some("python3".into()),
            worker_dir: Some(dir.path().to_owned()),
            slots: 1,
            user,
        };
        let executor = server::executor::start(&worker, dir.path(), stopped)
            .await
            .expect("executor")
            .executor;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!(
            "http://{}/v2/endpoint-1",
            listener.local_addr().expect("addr")
        );
        tokio::spawn(async move {
            axum::serve(listener, server::executor::router(executor, KEY))
                .await
                .expect("serve");
        });
        Self {
            base,
            client: reqwest::Client::new(),
            _dir: dir,
            _stop: stop,
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(KEY);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn wait_for(&self, id: &str, status: &str) -> Value {
        for _ in 0..200 {
            let (_, body) = self
                .call(reqwest::Method::GET, &format!("/status/{id}"), None)
                .await;
            if body["status"] == status {
                return body;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{id} never reached {status}");
    }
}

fn keys(value: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = value
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys
}

#[tokio::test]
async fn responses_have_runpods_shapes() {
    let api = Api::start().await;
    use reqwest::Method;

    let (status, run) = api
        .call(
            Method::POST,
            "/run",
            Some(json!({"input": {}, "policy": {"executionTimeout": 60000, "ttl": 600000}})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(keys(&run), ["id", "status"]);
    assert_eq!(run["status"], "IN_QUEUE");
    let id = run["id"].as_str().expect("id").to_owned();

    let done = api.wait_for(&id, "COMPLETED").await;
    assert_eq!(
        keys(&done),
        ["delayTime", "executionTime", "id", "output", "status"]
    );
    assert!(done["delayTime"].is_u64() && done["executionTime"].is_u64());
    assert_eq!(
        done["output"],
        json!([{"type": "tick", "i": 0}, {"type": "tick", "i": 1}]),
        "the aggregate stream"
    );

    let (_, stream) = api.call(Method::GET, &format!("/stream/{id}"), None).await;
    assert_eq!(keys(&stream), ["status", "stream"]);
    assert_eq!(
        stream["stream"],
        json!([{"output": {"type": "tick", "i": 0}}, {"output": {"type": "tick", "i": 1}}])
    );
    let (_, again) = api.call(Method::GET, &format!("/stream/{id}"), None).await;
    assert_eq!(again["stream"], json!([]), "each chunk is delivered once");

    // Retry is for FAILED/TIMED_OUT only.
    let (status, refused) = api.call(Method::POST, &format!("/retry/{id}"), None).await;
    assert_eq!(status, 400);
    assert!(refused["error"].as_str().expect("error").contains("FAILED"));
    let (_, failing) = api
        .call(Method::POST, "/run", Some(json!({"input": {"fail": true}})))
        .await;
    let failing = failing["id"].as_str().expect("id").to_owned();
    let failed = api.wait_for(&failing, "FAILED").await;
    let error: Value =
        serde_json::from_str(failed["error"].as_str().expect("error string")).expect("JSON error");
    assert_eq!(error["error_type"], "ValueError");
    let (status, retried) = api
        .call(Method::POST, &format!("/retry/{failing}"), None)
        .await;
    assert_eq!(
        (status, retried["status"].as_str()),
        (200, Some("IN_QUEUE"))
    );
    api.wait_for(&failing, "FAILED").await;

    // Cancel a running job; purge a queued one.
    let (_, running) = api
        .call(
            Method::POST,
            "/run",
            Some(json!({"input": {"sleep": true}})),
        )
        .await;
    let running = running["id"].as_str().expect("id").to_owned();
    api.wait_for(&running, "IN_PROGRESS").await;
    let (_, queued) = api
        .call(Method::POST, "/run", Some(json!({"input": {}})))
        .await;
    let queued = queued["id"].as_str().expect("id").to_owned();
    let (_, health) = api.call(Method::GET, "/health", None).await;
    assert_eq!(keys(&health), ["jobs", "workers"]);
    assert_eq!(
        keys(&health["jobs"]),
        ["completed", "failed", "inProgress", "inQueue", "retried"]
    );
    assert_eq!(keys(&health["workers"]), ["idle", "running"]);
    assert_eq!(health["jobs"]["inProgress"], 1);
    assert_eq!(health["jobs"]["inQueue"], 1);
    assert_eq!(health["jobs"]["retried"], 1);
    let (_, purged) = api.call(Method::POST, "/purge-queue", None).await;
    assert_eq!(purged, json!({"removed": 1, "status": "completed"}));
    assert_eq!(
        api.wait_for(&queued, "CANCELLED").await["status"],
        "CANCELLED"
    );
    let (_, cancelled) = api
        .call(Method::POST, &format!("/cancel/{running}"), None)
        .await;
    assert_eq!(keys(&cancelled), ["id", "status"]);
    assert_eq!(cancelled["status"], "CANCELLED");

    // Unknown ids, bad bodies, missing or wrong keys.
    let (status, body) = api.call(Method::GET, "/status/nope", None).await;
    assert_eq!(status, 404);
    assert!(body["error"].is_string());
    let (status, _) = api
        .call(Method::POST, "/run", Some(json!({"no_input": 1})))
        .await;
    assert_eq!(status, 400);
    let anonymous = api
        .client
        .get(format!("{}/health", api.base))
        .send()
        .await
        .expect("request");
    assert_eq!(anonymous.status(), 401);
    let wrong = api
        .client
        .get(format!("{}/health", api.base))
        .bearer_auth("wrong-key-of-some-length")
        .send()
        .await
        .expect("request");
    assert_eq!(wrong.status(), 401);
}

/// Reports what the worker can reach: who it is, the server's secret files, the database's
/// socket, and where it may write.
const PROBE: &str = r#"
import json, os, socket, sys
job = json.loads(sys.stdin.read())["input"]
def attempt(action):
    try:
        action()
        return "ok"
    except OSError as e:
        return type(e).__name__
def connect():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(job["socket"])
    s.close()
def write_home():
    with open(os.path.join(os.environ["HOME"], "tmp", "scratch"), "w") as f:
        f.write("x")
print(json.dumps({
    "uid": os.getuid(), "groups": os.getgroups(), "home": os.environ.get("HOME"),
    "secret": attempt(lambda: open(job["secret"]).read()),
    "objects": attempt(lambda: os.listdir(job["objects"])),
    "socket": attempt(connect),
    "write_home": attempt(write_home),
}), flush=True)
"#;

/// As root, the worker runs as its own unprivileged user: it cannot read the server's secret
/// files or stored objects, cannot reach the database's socket, and writes only to its home.
#[tokio::test]
async fn the_worker_runs_as_its_own_user_and_reaches_no_secret_and_no_database() {
    if std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) != 0)
        .unwrap_or(true)
    {
        // Without root there is no other user to switch to; CI runs as root.
        eprintln!("skipped: needs root to start the worker as another user");
        return;
    }
    let api = Api::start_with(PROBE, server::settings::WorkerUser::Auto).await;
    let data = api._dir.path();
    // What a server keeps in DATA_DIR, as it keeps it.
    let secret = data.join("postgres.secret");
    std::fs::write(&secret, "postgres=hunter2\n").unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let objects = data.join("objects");
    let run = data.join("run");
    for dir in [&objects, &run] {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    }
    let socket = run.join(".s.PGSQL.5432");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    // Even a socket file others may write to stays out of reach behind its directory.
    std::fs::set_permissions(&socket, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();

    let (status, run) = api
        .call(
            reqwest::Method::POST,
            "/run",
            Some(json!({ "input": {
                "secret": secret, "objects": objects, "socket": socket,
            }})),
        )
        .await;
    assert_eq!(status, 200, "{run}");
    let id = run["id"].as_str().unwrap().to_owned();
    let done = api.wait_for(&id, "COMPLETED").await;
    let report = &done["output"][0];
    assert_ne!(report["uid"], 0, "{done}");
    assert!(
        !report["groups"].as_array().unwrap().contains(&json!(0)),
        "no supplementary root group: {report}"
    );
    assert!(
        report["home"].as_str().unwrap().ends_with("worker-home"),
        "{report}"
    );
    assert_eq!(report["secret"], "PermissionError", "{report}");
    assert_eq!(report["objects"], "PermissionError", "{report}");
    assert_eq!(report["socket"], "PermissionError", "{report}");
    assert_eq!(report["write_home"], "ok", "{report}");
}
