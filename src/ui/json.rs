//! `parley chat [--json]`: one utterance per input line, one answer per turn — with
//! `--json` the object of the contract in PRODUCT.md, otherwise text. Scripts and
//! tests drive Parley through this.

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::app::Parley;
use crate::ops::Actor;
use crate::reply::Reply;

/// Reads turns from standard input until it ends, then waits for rollouts that are
/// still running so a piped script never leaves agents half-upgraded.
pub async fn chat(parley: &Parley, actor: Actor, json: bool) -> std::io::Result<()> {
    let render = |reply: &Reply| -> std::io::Result<String> {
        if json {
            let mut line = serde_json::to_string(reply).map_err(std::io::Error::other)?;
            line.push('\n');
            Ok(line)
        } else {
            Ok(super::text::render(reply) + "\n")
        }
    };
    let mut session = parley.session(actor);
    let mut input = BufReader::new(tokio::io::stdin());
    let mut out = tokio::io::stdout();
    let mut raw = Vec::new();
    loop {
        raw.clear();
        if input.read_until(b'\n', &mut raw).await? == 0 {
            break;
        }
        // Invalid UTF-8 is still an utterance (an unintelligible one), not a reason to stop.
        let line = String::from_utf8_lossy(&raw);
        let reply = session.handle(line.trim_end_matches(['\n', '\r'])).await;
        let written = match out.write_all(render(&reply)?.as_bytes()).await {
            Ok(()) => out.flush().await,
            Err(e) => Err(e),
        };
        match written {
            Ok(()) => {}
            // Nobody reads the answers any more (`| head`): stop taking turns, and
            // end quietly once what is running has finished.
            Err(e) if super::out::reader_gone(&e) => break,
            Err(e) => return Err(e),
        }
    }
    parley.services().orchestrator.wait_settled().await;
    Ok(())
}

/// `parley parse --json`: the parsed operation and its missing slots, nothing executed.
pub fn parse(parley: &Parley, utterance: &str) -> String {
    let services = parley.services();
    let topo = services.topology.snapshot();
    let vocab = crate::intent::Vocabulary::from_topology(&topo);
    let parse = services.grammar.parse(utterance, &vocab);
    serde_json::json!({ "operation": parse.operation, "missing": parse.missing }).to_string()
}
