//! `tollgate demo-upstream` (hidden): the app of the quick start. Prints each request tollgate
//! forwards and whether tollgate's own Standard Webhooks signature on it verifies with the app
//! secret, then answers 200. Needs nothing but this repository.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tollgate_verify::{find_provider, KeyRing, Options, Request, Secret, Settings, Verifier};

/// Arguments of `tollgate demo-upstream`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:3000")]
    pub listen: SocketAddr,
    /// Environment variable holding the route's `app_secret`.
    #[arg(long, default_value = "TOLLGATE_DEMO_APP_SECRET")]
    pub app_secret_env: String,
}

/// Runs the subcommand.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let verifier: Option<Arc<dyn Verifier>> = match std::env::var(&args.app_secret_env) {
        Ok(s) => {
            let spec = find_provider("standard-webhooks").context("standard-webhooks provider")?;
            let ring = KeyRing::single(Secret::new(s));
            Some(Arc::from(
                (spec.build)(&Options::new(), &ring, &Settings::default())
                    .map_err(|e| anyhow::anyhow!("{}: {e}", args.app_secret_env))?,
            ))
        }
        Err(_) => {
            eprintln!(
                "demo-upstream: {} not set; tollgate's signature will not be checked",
                args.app_secret_env
            );
            None
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("binding {}", args.listen))?;
        println!("demo-upstream listening on http://{}", args.listen);
        loop {
            let (stream, _) = listener.accept().await?;
            let verifier = verifier.clone();
            let listen = args.listen;
            tokio::spawn(async move {
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let verifier = verifier.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body
                            .collect()
                            .await
                            .map(|c| c.to_bytes())
                            .unwrap_or_default();
                        let url = format!(
                            "http://{listen}{}",
                            parts
                                .uri
                                .path_and_query()
                                .map(|p| p.as_str())
                                .unwrap_or("/")
                        );
                        let check = verifier.as_ref().map(|v| {
                            let req = Request {
                                method: parts.method.as_str(),
                                url: &url,
                                headers: &parts.headers,
                                body: &body,
                            };
                            match v.verify(&req, now()) {
                                Ok(_) => "tollgate signature valid".to_owned(),
                                Err(r) => format!("tollgate signature INVALID ({})", r.reason()),
                            }
                        });
                        let verified = parts
                            .headers
                            .get("tollgate-verified")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("-");
                        println!(
                            "{} {} ({} bytes) Tollgate-Verified: {verified}; {}",
                            parts.method,
                            parts.uri,
                            body.len(),
                            check.unwrap_or_else(|| "not checked".into())
                        );
                        let answer = format!("{{\"ok\":true,\"received_bytes\":{}}}", body.len());
                        let mut resp = http::Response::new(Full::new(Bytes::from(answer)));
                        resp.headers_mut().insert(
                            "content-type",
                            http::HeaderValue::from_static("application/json"),
                        );
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    })
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
