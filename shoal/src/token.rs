//! `shoal token create`: a bootstrap token for joining agents, as
//! `kubeadm token create` makes one (a Secret
//! `kube-system/bootstrap-token-<id>` the apiserver authenticates with
//! `--enable-bootstrap-token-auth`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use serde_json::json;
use shoal_core::duration::parse as parse_duration;

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Make (or renew) a bootstrap token and print it, or with
    /// --bootstrap-kubeconfig write a kubeconfig agents join with.
    Create(CreateArgs),
    /// Print a new random token (to pass to `create --token`).
    Generate,
}

#[derive(Args)]
pub struct CreateArgs {
    /// kubeconfig of a user who may write Secrets in kube-system.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: PathBuf,
    /// The token, `[a-z0-9]{6}.[a-z0-9]{16}` (default: a new random one).
    #[arg(long)]
    token: Option<String>,
    /// How long the token is valid (`0s`: it never expires).
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    ttl: Duration,
    /// Write a kubeconfig with the token here (the agents'
    /// `--bootstrap-kubeconfig`): the server and CA of --kubeconfig.
    #[arg(long)]
    bootstrap_kubeconfig: Option<PathBuf>,
}

pub async fn run(command: TokenCommand) -> anyhow::Result<()> {
    let args = match command {
        TokenCommand::Create(args) => args,
        TokenCommand::Generate => {
            println!("{}", generate());
            return Ok(());
        }
    };
    let token = match args.token {
        Some(token) => token,
        None => generate(),
    };
    let client = shoal_core::client::from_file(&args.kubeconfig)
        .await
        .with_context(|| format!("reading {}", args.kubeconfig.display()))?;
    let ttl = (!args.ttl.is_zero()).then_some(args.ttl);
    create(&client, &token, ttl, "made by shoal token create").await?;
    match args.bootstrap_kubeconfig {
        Some(path) => {
            let cluster =
                shoal_core::client::cluster_of(&args.kubeconfig).map_err(anyhow::Error::msg)?;
            let text = shoal_core::client::kubeconfig(&cluster, &[("token", &token)]);
            write_private(&path, &text)?;
            println!("{}", path.display());
        }
        None => println!("{token}"),
    }
    Ok(())
}

/// Writes `text` readable by its owner only.
pub fn write_private(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    shoal_core::tls::write_private(path, text)
        .with_context(|| format!("writing {}", path.display()))
}

/// A new random bootstrap token.
pub fn generate() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    let mut part = |n: usize| -> String {
        (0..n)
            .map(|_| char::from(ALPHABET[rng.gen_range(0..ALPHABET.len())]))
            .collect()
    };
    let id = part(6);
    format!("{id}.{}", part(16))
}

/// Writes the Secret of bootstrap token `token` (valid for `ttl`, or
/// for ever), replacing one of the same id.
pub async fn create(
    client: &kube::Client,
    token: &str,
    ttl: Option<Duration>,
    description: &str,
) -> anyhow::Result<()> {
    let Some((id, secret)) = token.split_once('.').filter(|(id, secret)| {
        let fits = |s: &str, n| {
            s.len() == n
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        };
        fits(id, 6) && fits(secret, 16)
    }) else {
        bail!("the token {token:?} is not of the form [a-z0-9]{{6}}.[a-z0-9]{{16}}");
    };
    let mut data = json!({
        "description": description,
        "token-id": id,
        "token-secret": secret,
        "usage-bootstrap-authentication": "true",
        "usage-bootstrap-signing": "true",
        // Bound to ask for node certificates (shoal:node-bootstrapper).
        "auth-extra-groups": "system:bootstrappers:shoal:default-node-token",
    });
    if let Some(ttl) = ttl {
        let expires = jiff::Timestamp::now()
            .checked_add(jiff::SignedDuration::try_from(ttl)?)?
            .strftime("%Y-%m-%dT%H:%M:%SZ")
            .to_string();
        data["expiration"] = json!(expires);
    }
    let name = format!("bootstrap-token-{id}");
    let object: Secret = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": "kube-system"},
        "type": "bootstrap.kubernetes.io/token",
        "stringData": data,
    }))?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "kube-system");
    match secrets.create(&PostParams::default(), &object).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let mut current = secrets.get(&name).await?;
            current.data = None;
            current.string_data = object.string_data;
            secrets
                .replace(&name, &PostParams::default(), &current)
                .await
                .with_context(|| format!("renewing kube-system/{name}"))?;
            Ok(())
        }
        Err(e) => Err(e).with_context(|| format!("creating kube-system/{name}")),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn generated_tokens_are_bootstrap_tokens() {
        for _ in 0..20 {
            let token = super::generate();
            let (id, secret) = token.split_once('.').unwrap();
            assert_eq!((id.len(), secret.len()), (6, 16));
            assert!(token
                .bytes()
                .all(|b| b == b'.' || b.is_ascii_lowercase() || b.is_ascii_digit()));
        }
    }
}
