//! `pods/log`, `pods/exec` and `pods/attach`: proxied to the agent of the
//! pod's node over HTTPS (the interface is in docs/apiserver.md).
//!
//! ```text
//!   kubectl ──GET pods/p/log──▶ apiserver ──GET /containerLogs/ns/p/c──▶ agent
//!   kubectl ══upgrade (WebSocket or SPDY)══ apiserver ══upgrade══ agent
//!           └────────── bytes copied both ways after the 101 ───────────┘
//! ```

use std::sync::Arc;

use axum::body::Body;
use axum::response::Response;
use http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;

use super::read::load;
use super::Ctx;
use crate::error::{ApiError, Result};
use crate::resources::Sub;
use crate::server::Api;

/// How the apiserver reaches agents.
pub struct AgentClient {
    pub tls: Arc<rustls::ClientConfig>,
    /// Bearer token presented to agents.
    pub token: Option<String>,
}

/// The port agents serve on when their Node does not say.
const DEFAULT_AGENT_PORT: i64 = 10250;

/// Query parameters passed on to the agent, per subresource.
const LOG_PARAMS: &[&str] = &[
    "follow",
    "previous",
    "tailLines",
    "timestamps",
    "sinceSeconds",
    "sinceTime",
    "limitBytes",
];
const STREAM_PARAMS: &[&str] = &["command", "stdin", "stdout", "stderr", "tty"];

/// The container a request is for: the one named, or the only one.
fn container(pod: &Value, name: &str, asked: Option<&str>) -> Result<String> {
    let names = |field: &str| -> Vec<String> {
        pod.pointer(&format!("/spec/{field}"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|c| c.get("name").and_then(Value::as_str).map(String::from))
            .collect()
    };
    let containers = names("containers");
    let init = names("initContainers");
    let ephemeral = names("ephemeralContainers");
    match asked {
        Some(c)
            if containers
                .iter()
                .chain(&init)
                .chain(&ephemeral)
                .any(|n| n == c) =>
        {
            Ok(c.to_string())
        }
        Some(c) => Err(ApiError::bad_request(format!(
            "container {c} is not valid for pod {name}"
        ))),
        None if containers.len() == 1 => Ok(containers[0].clone()),
        None => {
            let mut message = format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                containers.join(" ")
            );
            if !init.is_empty() {
                message.push_str(&format!(
                    " or one of the init containers: [{}]",
                    init.join(" ")
                ));
            }
            Err(ApiError::bad_request(message))
        }
    }
}

/// Where the agent of the pod's node listens.
async fn agent_address(api: &Api, pod: &Value, name: &str) -> Result<(String, u16)> {
    let node_name = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            ApiError::bad_request(format!("pod {name} does not have a host assigned"))
        })?;
    let nodes = crate::resources::served("", "v1", "nodes");
    let kv = api
        .store
        .get(&nodes.key(None, node_name))
        .await?
        .ok_or_else(|| ApiError::not_found(nodes, node_name))?;
    let node: Value =
        serde_json::from_slice(&kv.value).map_err(|e| ApiError::internal(e.to_string()))?;
    let addresses = node
        .pointer("/status/addresses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let address = ["InternalIP", "ExternalIP", "Hostname"]
        .iter()
        .find_map(|kind| {
            addresses
                .iter()
                .find(|a| a.get("type").and_then(Value::as_str) == Some(kind))
                .and_then(|a| a.get("address").and_then(Value::as_str))
        })
        .ok_or_else(|| ApiError::internal(format!("node {node_name} has no address")))?;
    let port = node
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_i64)
        .filter(|p| *p > 0)
        .unwrap_or(DEFAULT_AGENT_PORT);
    let port = u16::try_from(port)
        .map_err(|_| ApiError::internal(format!("node {node_name} reports port {port}")))?;
    Ok((address.to_string(), port))
}

fn agent_path(ctx: &Ctx, kind: &str, container: &str, allowed: &[&str], raw_query: &str) -> String {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw_query).unwrap_or_default();
    let query: Vec<(String, String)> = pairs
        .into_iter()
        .filter(|(k, _)| allowed.contains(&k.as_str()))
        .collect();
    let query = serde_urlencoded::to_string(&query).unwrap_or_default();
    format!(
        "/{kind}/{}/{}/{container}{}{query}",
        ctx.namespace.as_deref().unwrap_or_default(),
        ctx.name.as_deref().unwrap_or_default(),
        if query.is_empty() { "" } else { "?" },
    )
}

async fn connect(
    api: &Api,
    host: &str,
    port: u16,
) -> Result<hyper::client::conn::http1::SendRequest<Body>> {
    let unreachable = |e: &dyn std::fmt::Display| {
        ApiError::internal(format!(
            "error dialing the node agent at {host}:{port}: {e}"
        ))
    };
    let tcp = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| unreachable(&e))?;
    let _ = tcp.set_nodelay(true);
    let server_name =
        rustls::pki_types::ServerName::try_from(host.to_string()).map_err(|e| unreachable(&e))?;
    let tls = tokio_rustls::TlsConnector::from(api.agents.tls.clone())
        .connect(server_name, tcp)
        .await
        .map_err(|e| unreachable(&e))?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| unreachable(&e))?;
    tokio::spawn(async move {
        let _ = connection.with_upgrades().await;
    });
    Ok(sender)
}

fn authorize(api: &Api, headers: &mut HeaderMap) {
    headers.remove(header::AUTHORIZATION);
    if let Some(token) = &api.agents.token {
        if let Ok(value) = HeaderValue::from_str(&format!("Bearer {token}")) {
            headers.insert(header::AUTHORIZATION, value);
        }
    }
}

/// `GET pods/{name}/log`: the agent's log stream, passed through as it comes.
pub async fn log(api: &Api, ctx: &Ctx, raw_query: &str) -> Result<Response> {
    let name = ctx.name.clone().unwrap_or_default();
    let pod = load(api, ctx, &name).await?.object;
    let container = container(&pod, &name, ctx.param("container"))?;
    let (host, port) = agent_address(api, &pod, &name).await?;
    let path = agent_path(ctx, "containerLogs", &container, LOG_PARAMS, raw_query);
    let mut sender = connect(api, &host, port).await?;
    let mut request = http::Request::builder()
        .method(Method::GET)
        .uri(path)
        .header(header::HOST, format!("{host}:{port}"))
        .body(Body::empty())
        .map_err(|e| ApiError::internal(e.to_string()))?;
    authorize(api, request.headers_mut());
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| ApiError::internal(format!("the node agent did not answer: {e}")))?;
    let status = response.status();
    if !status.is_success() {
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
            .unwrap_or_default();
        let reason = if status == StatusCode::NOT_FOUND {
            "NotFound"
        } else {
            "BadRequest"
        };
        return Err(ApiError::new(
            status.as_u16().clamp(400, 599),
            reason,
            body.trim().to_string(),
        ));
    }
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::new(response.into_body()))
        .map_err(|e| ApiError::internal(e.to_string()))
}

/// `pods/{name}/exec` and `pods/{name}/attach`: the client's upgrade
/// (WebSocket or SPDY) is made to the agent, and once both sides switched
/// protocols the two connections are spliced.
pub async fn stream(
    api: Arc<Api>,
    ctx: &Ctx,
    mut request: axum::extract::Request,
) -> Result<Response> {
    let name = ctx.name.clone().unwrap_or_default();
    let pod = load(&api, ctx, &name).await?.object;
    let container = container(&pod, &name, ctx.param("container"))?;
    let (host, port) = agent_address(&api, &pod, &name).await?;
    let kind = if ctx.sub == Some(Sub::Exec) {
        "exec"
    } else {
        "attach"
    };
    let raw_query = request.uri().query().unwrap_or_default().to_string();
    let path = agent_path(ctx, kind, &container, STREAM_PARAMS, &raw_query);
    if !request.headers().contains_key(header::UPGRADE) {
        return Err(ApiError::bad_request(format!(
            "{kind} needs a connection upgrade (WebSocket or SPDY)"
        )));
    }
    let mut sender = connect(&api, &host, port).await?;
    let mut forwarded = http::Request::builder()
        .method(request.method().clone())
        .uri(path)
        .body(Body::empty())
        .map_err(|e| ApiError::internal(e.to_string()))?;
    for (key, value) in request.headers() {
        if key == header::HOST || key == header::AUTHORIZATION || key == header::CONTENT_LENGTH {
            continue;
        }
        forwarded.headers_mut().append(key.clone(), value.clone());
    }
    forwarded.headers_mut().insert(
        header::HOST,
        HeaderValue::from_str(&format!("{host}:{port}"))
            .map_err(|e| ApiError::internal(e.to_string()))?,
    );
    authorize(&api, forwarded.headers_mut());
    let mut agent_response = sender
        .send_request(forwarded)
        .await
        .map_err(|e| ApiError::internal(format!("the node agent did not answer: {e}")))?;
    if agent_response.status() != StatusCode::SWITCHING_PROTOCOLS {
        let status = agent_response.status();
        let body = http_body_util::BodyExt::collect(agent_response.into_body())
            .await
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
            .unwrap_or_default();
        return Err(ApiError::new(
            status.as_u16().clamp(400, 599),
            "BadRequest",
            body.trim().to_string(),
        ));
    }
    let mut response = Response::builder().status(StatusCode::SWITCHING_PROTOCOLS);
    for (key, value) in agent_response.headers() {
        response = response.header(key, value);
    }
    let client_upgrade = hyper::upgrade::on(&mut request);
    let agent_upgrade = hyper::upgrade::on(&mut agent_response);
    tokio::spawn(async move {
        let (Ok(client), Ok(agent)) = (client_upgrade.await, agent_upgrade.await) else {
            tracing::debug!("a stream upgrade failed on one side");
            return;
        };
        let mut client = TokioIo::new(client);
        let mut agent = TokioIo::new(agent);
        let _ = tokio::io::copy_bidirectional(&mut client, &mut agent).await;
    });
    response
        .body(Body::empty())
        .map_err(|e| ApiError::internal(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_container_is_named_or_the_only_one() {
        let one = json!({"spec": {"containers": [{"name": "a"}]}});
        assert_eq!(container(&one, "p", None).unwrap(), "a");
        let two = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}], "initContainers": [{"name": "i"}]}});
        assert_eq!(container(&two, "p", Some("i")).unwrap(), "i");
        let err = container(&two, "p", None).unwrap_err();
        assert_eq!(err.message, "a container name must be specified for pod p, choose one of: [a b] or one of the init containers: [i]");
        assert_eq!(container(&two, "p", Some("z")).unwrap_err().code, 400);
    }
}
