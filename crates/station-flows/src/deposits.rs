//! Deposit notices in chat: "💰 0.5 ETH arrived on Base: +500 points".
//! The core finds settled deposits not announced yet
//! ([`station_core::Station::deposit_notices`]); this writes one delivery
//! per deposit, keyed by the deposit, to the chat the account last used
//! `/wallet` or `/deposit` in. Run with the periodic scan, so a restart
//! between a credit and its notice only delays it.

use station_core::now_ms;
use station_core::wallets::{DepositNotice, WalletError};

use crate::engine::Flows;
use crate::flow::{FlowError, Out};
use crate::outbox::new_delivery;
use crate::platform::{Conversation, DeliveryKind};
use crate::view::{Rich, View, points};

impl Flows {
    /// Writes the notices of deposits settled since they were last looked
    /// for; returns how many were written.
    pub async fn announce_deposits(&self) -> Result<usize, FlowError> {
        let notices = match self.station().deposit_notices(50).await {
            Ok(n) => n,
            Err(WalletError::Storage(e)) => return Err(e.into()),
            Err(e) => {
                tracing::warn!(error = %e, "could not read deposits to announce");
                return Ok(0);
            }
        };
        let mut written = 0;
        for n in notices {
            let Ok(conv) = serde_json::from_str::<Conversation>(&n.conv_json) else { continue };
            let balance = self.station().points(&n.account_id).await?;
            let view = notice_view(&n, balance.available());
            let out = Out { view, kind: DeliveryKind::Notice, dedupe_key: Some(n.key.clone()) };
            let d = new_delivery(&conv, &n.account_id, &out);
            self.station().conversations().save_outbox(&[], &[d], false, None, now_ms()).await?;
            written += 1;
        }
        if written > 0 {
            self.inner.outbox.notify_one();
        }
        Ok(written)
    }
}

fn notice_view(n: &DepositNotice, available: i64) -> View {
    let d = &n.deposit;
    let text = match d.state.as_str() {
        "linked" => Rich::plain("🔗 Your deposit of ")
            .bold(d.amount_text.clone())
            .text(format!(" on {} arrived from ", d.chain))
            .code(d.from_address.clone())
            .text(": that wallet is now linked to your account. Deposits from it become points."),
        _ => Rich::plain("💰 ")
            .bold(d.amount_text.clone())
            .text(format!(" arrived on {} from ", d.chain))
            .code(d.from_address.clone())
            .text(": ")
            .bold(format!("+{}", points(d.points)))
            .text(". Balance: ")
            .bold(points(available))
            .text("."),
    };
    View::text(text).personal()
}
