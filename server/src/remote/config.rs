//! Where the CLI finds its server and token: `--url`/`LORA_PIPELINE_URL` and
//! `LORA_PIPELINE_TOKEN` first, then the config file `login` writes (mode 0600).

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use super::output::Output;
use super::{ApiClient, Connection, ExitStatus, Failure};

/// The environment variable scripts set instead of logging in.
pub const TOKEN_ENV: &str = "LORA_PIPELINE_TOKEN";

/// A server and the token to call it with.
#[derive(Clone, Serialize, Deserialize)]
pub struct Remote {
    pub url: String,
    pub token: String,
}

impl std::fmt::Debug for Remote {
    // The token never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote").field("url", &self.url).finish()
    }
}

impl Remote {
    /// Flags and environment first, the config file for what they leave out.
    pub fn resolve(connection: &Connection) -> anyhow::Result<Self> {
        let path = config_path(connection)?;
        let saved = read(&path)?;
        let url = connection
            .url
            .clone()
            .or_else(|| saved.as_ref().map(|s| s.url.clone()));
        let token = std::env::var(TOKEN_ENV)
            .ok()
            .filter(|t| !t.trim().is_empty())
            .or_else(|| saved.as_ref().map(|s| s.token.clone()));
        match (url, token) {
            (Some(url), Some(token)) => Ok(Self {
                url: normalize_url(&url)?,
                token: token.trim().to_owned(),
            }),
            _ => Err(Failure::new(
                ExitStatus::Unauthorized,
                format!(
                    "not signed in: run `lora-pipeline login --url https://your-server` (or set \
                     LORA_PIPELINE_URL and {TOKEN_ENV}); no config at {}",
                    path.display()
                ),
            )
            .into()),
        }
    }
}

/// `http(s)://host[:port][/prefix]` without a trailing slash.
fn normalize_url(raw: &str) -> anyhow::Result<String> {
    let trimmed = raw.trim().trim_end_matches('/');
    let parsed = url::Url::parse(trimmed)
        .with_context(|| format!("{trimmed:?} is not a URL: use e.g. https://lora.example.com"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
        bail!("{trimmed:?} is not an http(s) server URL: use e.g. https://lora.example.com");
    }
    Ok(trimmed.to_owned())
}

fn config_path(connection: &Connection) -> anyhow::Result<PathBuf> {
    if let Some(path) = &connection.config {
        return Ok(path.clone());
    }
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(
            std::env::var_os("HOME").context("neither XDG_CONFIG_HOME nor HOME is set")?,
        )
        .join(".config"),
    };
    Ok(base.join("lora-pipeline").join("config.toml"))
}

fn read(path: &Path) -> anyhow::Result<Option<Remote>> {
    match std::fs::read_to_string(path) {
        Ok(text) => toml::from_str(&text).map(Some).with_context(|| {
            format!(
                "{} is not a valid config: run `lora-pipeline login` again",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Written beside the target and renamed over it, created 0600: the token is a password.
fn write(path: &Path, remote: &Remote) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let dir = path.parent().context("the config path has no directory")?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let text = toml::to_string(remote).context("writing the config")?;
    let partial = path.with_extension("toml.partial");
    let _ = std::fs::remove_file(&partial);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&partial)
        .with_context(|| format!("creating {}", partial.display()))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", partial.display()))?;
    std::fs::rename(&partial, path).with_context(|| format!("writing {}", path.display()))
}

/// `lora-pipeline login`: checks the token against the server, then saves both.
pub async fn login(connection: &Connection, out: &Output) -> anyhow::Result<()> {
    let path = config_path(connection)?;
    let saved = read(&path).ok().flatten();
    let Some(url) = connection.url.clone().or(saved.map(|s| s.url)) else {
        return Err(Failure::new(
            ExitStatus::Error,
            "which server? pass --url https://your-server (or set LORA_PIPELINE_URL)",
        )
        .into());
    };
    let url = normalize_url(&url)?;
    let token = match std::env::var(TOKEN_ENV)
        .ok()
        .filter(|t| !t.trim().is_empty())
    {
        Some(token) => token,
        None => {
            let stdin = std::io::stdin();
            if stdin.is_terminal() {
                eprint!("API token for {url} (Settings → API tokens → New token): ");
                let _ = std::io::stderr().flush();
            }
            let mut line = String::new();
            stdin
                .lock()
                .read_line(&mut line)
                .context("reading the token from standard input")?;
            line
        }
    };
    let token = token.trim().to_owned();
    if token.is_empty() {
        bail!("no token given: paste one made on Settings → API tokens");
    }
    let remote = Remote { url, token };
    let user = ApiClient::new(&remote)?.me().await?;
    write(&path, &remote)?;
    if out.json() {
        out.json_value(&serde_json::json!({
            "url": remote.url, "email": user.email, "config": path,
        }))
    } else {
        println!(
            "signed in to {} as {}; saved in {}",
            remote.url,
            user.email,
            path.display()
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_and_lose_their_trailing_slash() {
        assert_eq!(
            normalize_url(" https://lora.example.com/ ").unwrap(),
            "https://lora.example.com"
        );
        assert_eq!(
            normalize_url("http://127.0.0.1:3000").unwrap(),
            "http://127.0.0.1:3000"
        );
        assert!(normalize_url("lora.example.com").is_err());
        assert!(normalize_url("ftp://lora.example.com").is_err());
    }

    #[test]
    fn the_config_is_private_and_read_back() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/config.toml");
        let remote = Remote {
            url: "http://127.0.0.1:3000".into(),
            token: "lpt_secret".into(),
        };
        write(&path, &remote).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let back = read(&path).unwrap().unwrap();
        assert_eq!((&back.url, &back.token), (&remote.url, &remote.token));
        assert!(!format!("{remote:?}").contains("lpt_secret"));
        // Written again over the first.
        write(&path, &remote).unwrap();
        assert!(read(&dir.path().join("absent.toml")).unwrap().is_none());
    }
}
