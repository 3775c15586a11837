//! The async [`KvsClient`] against a running server: connect by host name,
//! set and get, a TTL, a batch read, and a pipeline of 1000 requests in one
//! round trip's worth of waiting.
//!
//! ```sh
//! cargo run --release --bin kvs-server -- --engine memory &
//! cargo run --release --example client                 # localhost:4000
//! cargo run --release --example client -- kvs:4000     # any HOST:PORT
//! ```

use std::time::{Duration, Instant};

use kvs::KvsClient;
use kvs::protocol::{Request, Response};

#[tokio::main(flavor = "current_thread")]
async fn main() -> kvs::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "localhost:4000".to_owned());
    // A name is resolved here, on every connect (/etc/hosts, then DNS).
    let mut client = KvsClient::connect(&addr).await?;
    client.ping().await?;
    println!("connected to {addr}");

    client.set("greeting", "hello").await?;
    println!("greeting = {:?}", client.get("greeting").await?);

    client
        .set_with_ttl("session", "token", Duration::from_millis(200))
        .await?;
    println!(
        "session = {:?} (expires in 200 ms)",
        client.get("session").await?
    );

    println!(
        "batch: {:?}",
        client.get_many(&["greeting", "missing"]).await?
    );

    // Pipelining: queue many requests, then read their responses in order.
    let t = Instant::now();
    let keys: Vec<String> = (0..1000).map(|i| format!("key:{i}")).collect();
    for key in &keys {
        client.queue(&Request::Set {
            key: key.as_str(),
            value: "v",
            ttl_ms: None,
        })?;
    }
    client.flush().await?;
    let mut ok = 0;
    for _ in &keys {
        if let Response::Ok = client.recv().await? {
            ok += 1;
        }
    }
    println!("pipelined {ok} SETs in {:?}", t.elapsed());

    client.remove("greeting").await?;
    println!("greeting after rm = {:?}", client.get("greeting").await?);
    Ok(())
}
