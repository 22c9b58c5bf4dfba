//! Plain tarpc, the peer the runtime is built on: the same process layout as the floor (one
//! server process, W client processes, one current-thread tokio runtime each), with the crates
//! the runtime uses (tarpc 0.38, `tarpc::serde_transport` over a Unix socket, tarpc's bincode)
//! and a trivial `get_name() -> String` service, written as tarpc's own examples write it: the
//! server spawns a task per request, each client sends through its spawned dispatch task.
//!
//! `tarpc-w1` and `tarpc-w2` run the calls of `w1` and `w2` against it, so each run shows what
//! the runtime adds (or saves) next to the library it is made of.

use crate::measure;
use crate::Job;
use anyhow::{Context, Result};
use futures::StreamExt;
use tarpc::server::{BaseChannel, Channel};
use tarpc::tokio_serde::formats::Bincode;
use tarpc::tokio_util::codec::LengthDelimitedCodec;
use tokio::net::UnixStream;

/// The service: `w1`'s and `w2`'s call.
#[tarpc::service]
pub(crate) trait Plain {
    /// Returns a short name, as `Demo::get_name` does.
    async fn get_name() -> String;
}

/// The server's one (stateless) service value.
#[derive(Debug, Clone, Copy)]
struct PlainServer;

impl Plain for PlainServer {
    async fn get_name(self, _: tarpc::context::Context) -> String {
        "get name".into()
    }
}

/// A connection's transport, as the runtime builds its own: length-delimited frames, bincode.
fn transport<In, Out>(
    stream: UnixStream,
) -> tarpc::serde_transport::Transport<UnixStream, In, Out, Bincode<In, Out>>
where
    In: for<'de> serde::Deserialize<'de>,
    Out: serde::Serialize,
{
    tarpc::serde_transport::new(
        LengthDelimitedCodec::builder().new_framed(stream),
        Bincode::default(),
    )
}

/// The server: accepts one connection per client (`--workers`), serves each until it closes,
/// then exits. Prints `LISTENING` once it accepts connections.
pub(crate) fn serve(args: &crate::Args) -> Result<bool> {
    crate::floor::serve_connections(args, "the tarpc server", |stream| {
        let channel = BaseChannel::with_defaults(transport(stream));
        let served = channel
            .execute(PlainServer.serve())
            .for_each(|response| async move {
                tokio::spawn(response);
            });
        async move {
            served.await;
            Ok(())
        }
    })
}

/// A measuring client: warms up, measures as the job says, prints its `BENCH` line.
pub(crate) fn client(args: &crate::Args) -> Result<bool> {
    crate::die_with_parent(args.parent)?;
    let job = Job::from_child_args(args)?;
    let socket = args.socket.clone().context("--socket is required")?;
    crate::floor::current_thread()?.block_on(async {
        let stream = UnixStream::connect(&socket)
            .await
            .with_context(|| format!("connecting to {}", socket.display()))?;
        let server = stream.peer_cred()?.pid().context("the server's pid")?;
        let client = PlainClient::new(tarpc::client::Config::default(), transport(stream)).spawn();
        let name = client.get_name(tarpc::context::current()).await?;
        anyhow::ensure!(name == "get name", "get_name returned {name:?}");
        let call = move || {
            let client = client.clone();
            async move { client.get_name(tarpc::context::current()).await.map(drop) }
        };
        let (warmup, plan) = job.plans();
        measure::calls(job.inflight, warmup, call.clone()).await?;
        let cpu = measure::CpuMeter::start(server as u32)?;
        let measured = measure::calls(job.inflight, plan, call).await?;
        println!("BENCH {} {}", measured.line(), cpu.line()?);
        Ok(true)
    })
}
