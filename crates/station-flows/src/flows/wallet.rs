//! `wallet` and `deposit`: link an EVM wallet (by a signed message, or by a
//! deposit of an exact amount from the address) and see where to send
//! deposits. Every rule (one account per address, the magic amount only
//! from the typed address, challenge expiry) is the core's
//! (`station_core::wallets`); this only asks and shows.

use serde_json::{Value, json};
use station_core::wallets::WalletError;

use crate::flow::{Accepts, Cx, Flow, FlowError, Next, Out, Start, StepInput, StepSpec, get_str, with};
use crate::view::{Block, Button, Field, InputKind, Rich, View};

/// The wallet flow.
pub struct Wallet;

const STEPS: &[StepSpec] = &[
    StepSpec { id: "chain", accepts: &[Accepts::Text] },
    StepSpec { id: "menu", accepts: &[] },
    StepSpec { id: "address", accepts: &[Accepts::Text] },
    StepSpec { id: "signature", accepts: &[Accepts::Text] },
];

fn words(e: WalletError) -> Result<String, FlowError> {
    match e {
        WalletError::Storage(s) => Err(s.into()),
        WalletError::Invalid(fields) => Ok(fields
            .iter()
            .map(|f| match f.field.as_str() {
                "feature" => f.reason.clone(),
                field => format!("{field}: {}", f.reason),
            })
            .collect::<Vec<_>>()
            .join("\n")),
        WalletError::Rpc(_) => Ok("The chain cannot be reached right now; try again in a minute.".into()),
        other => Ok(other.to_string()),
    }
}

/// Deposits of this account are announced in this chat from now on (a
/// private chat only: amounts are nobody else's business).
async fn remember_chat(cx: &Cx<'_>) -> Result<(), FlowError> {
    if cx.conversation.group.is_some() {
        return Ok(());
    }
    let conv_json = serde_json::to_string(cx.conversation).expect("conversation serialises");
    match cx
        .station
        .remember_deposit_chat(cx.account, &cx.conversation.platform, &cx.conversation.key(), &conv_json)
        .await
    {
        Err(WalletError::Storage(e)) => Err(e.into()),
        _ => Ok(()),
    }
}

fn chain_of(state: &Value) -> u64 {
    state.get("chain").and_then(Value::as_u64).unwrap_or(0)
}

/// "the next 15 minutes": how long until `ms` (Unix ms), for a person.
fn within(ms: i64) -> String {
    match ((ms - station_core::now_ms()) / 60_000).max(1) {
        1 => "the next minute".into(),
        n => format!("the next {n} minutes"),
    }
}

#[async_trait::async_trait]
impl Flow for Wallet {
    fn name(&self) -> &'static str {
        "wallet"
    }

    fn description(&self) -> &'static str {
        "Link a crypto wallet to pay in points"
    }

    fn personal(&self) -> bool {
        true
    }

    fn steps(&self) -> &'static [StepSpec] {
        STEPS
    }

    async fn start(&self, cx: &Cx<'_>, _start: Start) -> Result<Next, FlowError> {
        if let Some(off) = cx.station.feature_refusal("wallets", cx.account).await {
            return Ok(Next::Finish(vec![Out::message(View::text(off.reason).personal())]));
        }
        let chains = cx.station.deposit_info();
        if !chains.is_empty() {
            remember_chat(cx).await?;
        }
        match chains.as_slice() {
            [] => Ok(Next::Finish(vec![Out::message(
                View::text("This Station takes no crypto payments: no chains are set up.").personal(),
            )])),
            [one] => Ok(Next::Goto("menu".into(), json!({"chain": one.chain_id}))),
            _ => Ok(Next::Goto("chain".into(), json!({}))),
        }
    }

    async fn view(&self, cx: &Cx<'_>, step: &str, state: &Value) -> Result<View, FlowError> {
        let chain = cx.station.deposit_info().into_iter().find(|c| c.chain_id == chain_of(state));
        let chain_name = chain.as_ref().map_or_else(|| "the chain".to_string(), |c| c.name.clone());
        Ok(match step {
            "chain" => {
                let options =
                    cx.station.deposit_info().into_iter().map(|c| Button::action(c.name, "choose", json!({"value": c.chain_id}))).collect();
                View::text("Which chain is your wallet on?")
                    .row(vec![Button::action("Cancel", "cancel", Value::Null).danger()])
                    .ask("Chain", InputKind::Choice { options })
            }
            "menu" => {
                let mine: Vec<_> = match cx.station.wallets(cx.account).await {
                    Ok(l) => l.into_iter().filter(|l| l.chain_id == chain_of(state)).collect(),
                    Err(e) => return Ok(View::text(words(e)?)),
                };
                let mut view = View::default();
                if mine.is_empty() {
                    view = view.with_text(format!(
                        "No wallet on {chain_name} is linked to your account yet. Link one to have its deposits \
                         become your points."
                    ));
                } else {
                    let fields = mine
                        .iter()
                        .map(|l| Field { name: l.address.clone(), value: format!("linked by {}", l.method), inline: false })
                        .collect();
                    view = view.block(Block::Card { title: format!("Your wallets on {chain_name}"), body: None, image: None, fields });
                }
                view = view
                    .with_text(
                        "Link by signing a message (any wallet that can sign), or by sending an exact small \
                         amount from the address (for wallets that cannot sign).",
                    )
                    .row(vec![
                        Button::action("✍ Link by signature", "sign", Value::Null).primary(),
                        Button::action("💸 Link by deposit", "magic", Value::Null),
                    ]);
                for l in mine.iter().take(5) {
                    let short = format!("{}…{}", &l.address[..6.min(l.address.len())], &l.address[l.address.len().saturating_sub(4)..]);
                    view = view.row(vec![Button::action(format!("Unlink {short}"), "unlink", json!({"address": l.address})).danger()]);
                }
                view.row(vec![Button::action("Close", "cancel", Value::Null)])
            }
            "address" => View::text(format!("Send the address of your wallet on {chain_name} (0x followed by 40 hex digits)."))
                .row(vec![Button::action("◀ Back", "back", Value::Null), Button::action("Cancel", "cancel", Value::Null).danger()])
                .ask("Address", InputKind::Text { placeholder: Some("0x…".into()), multiline: false, max_len: Some(42) }),
            "signature" => {
                let message = get_str(state, "message").unwrap_or("").to_string();
                View::text("Sign this message in your wallet (personal_sign — in MetaMask, Rabby or a hardware wallet's app) and send me the signature (0x…):")
                    .block(Block::Text { text: Rich::plain("").code(message) })
                    .with_text(format!(
                        "It is good once, within {}. Signing it costs nothing and moves no funds.",
                        within(state.get("expires_at").and_then(Value::as_i64).unwrap_or(0))
                    ))
                    .row(vec![Button::action("Cancel", "cancel", Value::Null).danger()])
                    .ask("Signature", InputKind::Text { placeholder: Some("0x…".into()), multiline: false, max_len: Some(1000) })
            }
            other => View::text(format!("(unknown step {other})")),
        }
        .personal())
    }

    async fn input(&self, cx: &Cx<'_>, step: &str, state: &Value, input: StepInput) -> Result<Next, FlowError> {
        match (step, input) {
            ("chain", StepInput::Action { name, args }) if name == "choose" => {
                Ok(Next::Goto("menu".into(), json!({"chain": args.get("value").and_then(Value::as_u64).unwrap_or(0)})))
            }
            ("chain", StepInput::Text(t)) => match cx
                .station
                .deposit_info()
                .into_iter()
                .find(|c| c.name.eq_ignore_ascii_case(t.trim()) || c.chain_id.to_string() == t.trim())
            {
                Some(c) => Ok(Next::Goto("menu".into(), json!({"chain": c.chain_id}))),
                None => Ok(Next::Invalid("Choose one of the chains listed.".into())),
            },
            ("menu", StepInput::Action { name, .. }) if name == "sign" || name == "magic" => {
                Ok(Next::Goto("address".into(), with(state, "method", name)))
            }
            ("menu", StepInput::Action { name, args }) if name == "unlink" => {
                let address = get_str(&args, "address").unwrap_or("");
                match cx.station.unlink_wallet(cx.account, chain_of(state), address).await {
                    Ok(true) => Ok(Next::Stay(state.clone())),
                    Ok(false) => Ok(Next::Invalid("That wallet is not linked to your account.".into())),
                    Err(e) => Ok(Next::Invalid(words(e)?)),
                }
            }
            ("address", StepInput::Text(t)) => {
                let chain = chain_of(state);
                if get_str(state, "method") == Some("magic") {
                    return match cx.station.magic_quote(cx.account, chain, t.trim()).await {
                        Ok(q) => Ok(Next::Finish(vec![Out::message(
                            View::text(Rich::plain("Send exactly ").bold(q.amount_text.clone()).text(format!(
                                " on {} from {} to:",
                                q.chain, q.from_address
                            )))
                            .block(Block::Text { text: Rich::plain("").code(q.deposit_address.clone()) })
                            .with_text(format!(
                                "within {}. When it arrives from that address, the wallet is linked to your account and the \
                                 amount becomes points. The same amount from any other address links nothing.",
                                within(q.expires_at)
                            ))
                            .personal(),
                        )])),
                        Err(e) => Ok(Next::Invalid(words(e)?)),
                    };
                }
                match cx.station.wallet_challenge(cx.account, chain, t.trim()).await {
                    Ok(ch) => {
                        let s = with(&with(state, "nonce", ch.nonce), "message", ch.message);
                        Ok(Next::Goto("signature".into(), with(&s, "expires_at", ch.expires_at)))
                    }
                    Err(e) => Ok(Next::Invalid(words(e)?)),
                }
            }
            ("signature", StepInput::Text(t)) => {
                let nonce = get_str(state, "nonce").unwrap_or("");
                match cx.station.verify_wallet(cx.account, nonce, t.trim()).await {
                    Ok(link) => Ok(Next::Finish(vec![Out::message(
                        View::text(Rich::plain("✅ Linked ").code(link.address.clone()).text(format!(
                            " on {}. Deposits from it become your points; /deposit says where to send them.",
                            link.chain
                        )))
                        .personal(),
                    )])),
                    Err(e) => Ok(Next::Invalid(words(e)?)),
                }
            }
            _ => Ok(Next::Invalid("Use the buttons of this step.".into())),
        }
    }
}

/// `deposit`: where to send funds on each chain, the rates, and your recent deposits.
pub async fn deposit_answer(cx: &Cx<'_>) -> Result<View, FlowError> {
    if let Some(off) = cx.station.feature_refusal("wallets", cx.account).await {
        return Ok(View::text(off.reason));
    }
    let chains = cx.station.deposit_info();
    if chains.is_empty() {
        return Ok(View::text("This Station takes no crypto payments: no chains are set up."));
    }
    remember_chat(cx).await?;
    let linked = match cx.station.wallets(cx.account).await {
        Ok(l) => l,
        Err(e) => return Ok(View::text(words(e)?)),
    };
    let mut view = View::default();
    for c in &chains {
        let fields = c
            .assets
            .iter()
            .map(|a| Field {
                name: a.symbol.clone(),
                value: format!("{} points per {}, at least {} {}", a.points_per_unit, a.symbol, a.minimum, a.symbol),
                inline: false,
            })
            .collect();
        view = view.block(Block::Card {
            title: format!("{}: send to", c.name),
            body: Some(Rich::plain("").code(c.deposit_address.clone()).text(format!(
                "\nCredited after {} confirmation{}.",
                c.confirmations,
                if c.confirmations == 1 { "" } else { "s" }
            ))),
            image: None,
            fields,
        });
    }
    if linked.is_empty() {
        view =
            view.with_text("Points go to the account the sending address is linked to: link yours first with /wallet.");
    } else {
        let list: Vec<String> = linked.iter().map(|l| format!("{} ({})", l.address, l.chain)).collect();
        view = view.with_text(format!("Send from a linked wallet: {}.", list.join(", ")));
    }
    if cx.conversation.group.is_none() {
        view = view.with_text("I will tell you here when a deposit is credited.");
    }
    let recent = match cx.station.deposits(cx.account, 5).await {
        Ok(d) => d,
        Err(e) => return Ok(View::text(words(e)?)),
    };
    if !recent.is_empty() {
        let fields = recent
            .iter()
            .map(|d| {
                let state = match d.state.as_str() {
                    "pending" => format!(
                        "{} of {} confirmations",
                        d.confirmations.min(d.confirmations_needed),
                        d.confirmations_needed
                    ),
                    "credited" | "linked" => format!("+{} points", d.points),
                    "below_minimum" => "below the minimum, not credited".into(),
                    "removed" => "dropped from the chain".into(),
                    other => other.to_string(),
                };
                Field { name: d.amount_text.clone(), value: format!("{} · {state}", d.chain), inline: false }
            })
            .collect();
        view = view.block(Block::Card { title: "Your recent deposits".into(), body: None, image: None, fields });
    }
    Ok(view.row(vec![Button::action("🔗 Link a wallet", "start", json!({"flow": "wallet"}))]))
}
