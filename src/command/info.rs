//! INFO: Redis's `# Section` / `key:value` report from the server's
//! counters and the engine's statistics.

use std::fmt::Write;

use super::{EngineCommand, Executed, Op, REDIS_VERSION, ServerContext, Session, Step};
use crate::KvsEngine;
use crate::protocol::resp::Reply;

/// The sections kvs reports, in Redis's order.
const SECTIONS: [&str; 6] = [
    "server",
    "clients",
    "memory",
    "persistence",
    "stats",
    "keyspace",
];

/// Which sections an `INFO` asked for.
#[derive(Debug)]
pub(super) struct Info {
    sections: [bool; SECTIONS.len()],
}

pub(super) fn info(args: &[&[u8]], _: &mut Session, _: &ServerContext) -> Step {
    let mut sections = [args.len() == 1; SECTIONS.len()];
    for arg in &args[1..] {
        let arg = arg.to_ascii_lowercase();
        if matches!(&arg[..], b"all" | b"default" | b"everything") {
            sections = [true; SECTIONS.len()];
        } else if let Some(i) = SECTIONS.iter().position(|s| s.as_bytes() == &arg[..]) {
            sections[i] = true;
        }
    }
    Step::Engine(EngineCommand(Op::Info(Info { sections })))
}

impl Info {
    pub(super) fn execute<E: KvsEngine>(self, engine: &E, ctx: &ServerContext) -> Executed {
        let stats = ctx.stats();
        let engine_stats = engine.stats();
        let keys = engine.len();
        let config = |name: &str| {
            ctx.config
                .iter()
                .find(|(n, _)| n == name)
                .map_or("", |(_, v)| v.as_str())
        };
        let mut out = String::new();
        for (i, name) in SECTIONS.iter().enumerate() {
            if !self.sections[i] {
                continue;
            }
            if !out.is_empty() {
                out.push_str("\r\n");
            }
            let mut title = name.to_string();
            title[..1].make_ascii_uppercase();
            let _ = write!(out, "# {title}\r\n");
            let mut line = |k: &str, v: &dyn std::fmt::Display| {
                let _ = write!(out, "{k}:{v}\r\n");
            };
            match *name {
                "server" => {
                    line("redis_version", &REDIS_VERSION);
                    line("kvs_version", &env!("CARGO_PKG_VERSION"));
                    line("redis_mode", &"standalone");
                    line("kvs_engine", &ctx.info.engine);
                    line("arch_bits", &(usize::BITS));
                    line("process_id", &std::process::id());
                    line("tcp_port", &ctx.info.tcp_port);
                    line("uptime_in_seconds", &stats.uptime_secs);
                    line("uptime_in_days", &(stats.uptime_secs / 86_400));
                }
                "clients" => {
                    line("connected_clients", &stats.connections_current);
                    line("blocked_clients", &0);
                }
                "memory" => {
                    line("used_memory", &engine_stats.used_memory);
                    line("used_memory_human", &human(engine_stats.used_memory));
                    line("used_memory_rss", &stats.rss_bytes);
                    line("used_memory_rss_human", &human(stats.rss_bytes));
                    line("maxmemory", &engine_stats.max_memory);
                    line("maxmemory_human", &human(engine_stats.max_memory));
                    line("maxmemory_policy", &config("maxmemory-policy"));
                }
                "persistence" => {
                    line("loading", &0);
                    line("aof_enabled", &u8::from(ctx.info.persistent));
                    line("kvs_live_bytes", &engine_stats.live_bytes);
                    line("kvs_disk_bytes", &engine_stats.disk_bytes);
                    line("kvs_compaction_failures", &engine_stats.compaction_failures);
                }
                "stats" => {
                    line("total_connections_received", &stats.connections_total);
                    line("total_commands_processed", &stats.commands);
                    line("total_net_input_bytes", &stats.bytes_in);
                    line("total_net_output_bytes", &stats.bytes_out);
                    line("rejected_connections", &stats.connections_refused);
                    line("expired_keys", &engine_stats.expired);
                    line("evicted_keys", &engine_stats.evicted);
                    line("keyspace_hits", &stats.hits);
                    line("keyspace_misses", &stats.misses);
                    line("kvs_protocol_errors", &stats.protocol_errors);
                }
                _ => {
                    // Redis lists only databases that hold keys.
                    if keys > 0 {
                        line("db0", &format_args!("keys={keys},expires=0,avg_ttl=0"));
                    }
                }
            }
        }
        Reply::bulk(out).into()
    }
}

/// Bytes as Redis's `*_human` fields print them (`1.50M`).
fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "K", "M", "G", "T"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes}B")
    } else {
        format!("{value:.2}{}", UNITS[unit])
    }
}
