use std::path::Path;

use chrono::NaiveDate;

use super::*;
use crate::demo::{DemoOptions, Progress, run_demo};
use crate::sources::connectors::Reject;
use crate::synthetic::{Synthetic, SyntheticConfig, batches_customer_email};

fn config() -> SyntheticConfig {
    SyntheticConfig {
        clients: 2,
        days: 10,
        rows: 600,
        seed: 5,
        end_date: NaiveDate::from_ymd_opt(2025, 5, 31).unwrap(),
        incidents: false,
    }
}

/// Every file's bytes under `dir`, folder names included, lowercased.
fn everything_under(dir: &Path) -> String {
    let mut out = String::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            out.push_str(&path.to_string_lossy());
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push_str(&String::from_utf8_lossy(&std::fs::read(&path).unwrap()));
            }
        }
    }
    out.to_lowercase()
}

#[tokio::test]
async fn a_shoppers_orders_are_exported_then_erased_without_a_trace() {
    let dir = tempfile::tempdir().unwrap();
    let c = config();
    run_demo(
        &DemoOptions::new(dir.path().to_str().unwrap(), &c),
        Progress::Hidden,
    )
    .await
    .unwrap();
    let synthetic = Synthetic::new(c);
    let client = synthetic.clients()[0].id.clone();
    let key = synthetic.customer_hash_key().to_vec();
    let warehouse = Warehouse::open(dir.path().to_str().unwrap()).unwrap();

    // A shopper of this client with at least two orders.
    let mut email = String::new();
    let mut wanted = 0;
    for n in 0..5_000 {
        batches_customer_email(n, &mut email);
        let req = ShopperRequest {
            client: client.clone(),
            email: email.clone(),
            hash_key: key.clone(),
        };
        wanted = export(&warehouse, &req).await.unwrap().orders.len();
        if wanted >= 2 {
            break;
        }
    }
    assert!(wanted >= 2, "no shopper with two orders");
    // A rejected order of theirs, as Shopify sent it (address in capitals).
    let raw = serde_json::json!({"id": 991, "email": email.to_uppercase(), "total_price": "x"});
    crate::lake::quarantine::replace_quarantine(
        &warehouse,
        "run-dsr",
        &client,
        "shopify",
        (
            NaiveDate::from_ymd_opt(2025, 5, 30).unwrap(),
            NaiveDate::from_ymd_opt(2025, 5, 30).unwrap(),
        ),
        &[Reject::new("total_price: not a number", &raw)],
    )
    .await
    .unwrap();

    let req = ShopperRequest {
        client: client.clone(),
        email: format!("  {}  ", email.to_uppercase()),
        hash_key: key.clone(),
    };
    let exported = export(&warehouse, &req).await.unwrap();
    assert_eq!(exported.orders.len(), wanted);
    assert!(
        exported
            .orders
            .iter()
            .all(|o| o["customer_key"] == exported.customer_key.as_str())
    );
    assert_eq!(exported.quarantined.len(), 1);
    let orders_before = crate::lake::erase::count_client_rows(&warehouse, &ORDERS, &client)
        .await
        .unwrap();
    assert!(everything_under(dir.path()).contains(&exported.customer_key));

    let audit = erase(&warehouse, &req, "dpo@agency.example", Some("DSR-7".into()))
        .await
        .unwrap();
    assert_eq!(audit.tables[0].rows_deleted, wanted as u64);
    assert_eq!(audit.tables[1].rows_deleted, 1);
    // Only the shopper's orders went.
    assert_eq!(
        crate::lake::erase::count_client_rows(&warehouse, &ORDERS, &client)
            .await
            .unwrap(),
        orders_before - wanted as u64
    );
    let after = export(&warehouse, &req).await.unwrap();
    assert!(after.orders.is_empty() && after.quarantined.is_empty());
    // No byte under the warehouse holds the address, and no file of this
    // client's orders the customer key (the same person may be a shopper
    // of another client, whose orders are that client's to answer for).
    let all = everything_under(dir.path());
    assert!(!all.contains(&email.to_lowercase()));
    let own = everything_under(
        &dir.path()
            .join("orders")
            .join(format!("client_id={client}")),
    );
    assert!(!own.contains(&exported.customer_key));
    let entry = std::fs::read_to_string(dir.path().join(&audit.audit_path)).unwrap();
    assert!(entry.contains(&audit.customer_key_sha256) && entry.contains("DSR-7"));

    // Nothing left: refused, and nothing changes.
    let again = erase(&warehouse, &req, "dpo", None).await.unwrap_err();
    assert!(again.to_string().contains("nothing was changed"), "{again}");
    let no_key = ShopperRequest {
        hash_key: Vec::new(),
        ..req.clone()
    };
    assert!(
        export(&warehouse, &no_key)
            .await
            .unwrap_err()
            .to_string()
            .contains("customer_hash_key")
    );
}
