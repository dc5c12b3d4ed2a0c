//! `coffre audit report`: the audit as one self-contained HTML page for a compliance officer —
//! the verdict first, then what happened to each dataset, each release's hardware and policies,
//! each denial's failed checks, the lineage from dataset to model, and the log's checkpoint.
//!
//! No script, no external asset (styles inline), readable printed or as a PDF. Every value comes
//! from the audit (`coffre_broker::audit::audit_with_events`): claims are the ones the audit
//! re-derived by verifying the evidence again, not what the vault wrote down.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use coffre_broker::audit::{Event, Report};

/// Escapes text for HTML.
fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// Unix seconds as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC", rem / 3600, rem / 60 % 60, rem % 60)
}

const STYLE: &str = r#"
:root { --ink:#1d2433; --muted:#5b6475; --line:#d9dee8; --ok:#0f6b3a; --okbg:#e6f4ec; --bad:#a3111f; --badbg:#fbe9eb; --warn:#8a5a00; --warnbg:#fff4dc; }
* { box-sizing: border-box; }
body { font: 14px/1.5 -apple-system, "Segoe UI", "DejaVu Sans", Arial, sans-serif; color: var(--ink); margin: 0 auto; max-width: 1100px; padding: 24px 32px; background: #fff; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 19px; margin: 32px 0 10px; border-bottom: 2px solid var(--line); padding-bottom: 4px; }
h3 { font-size: 15px; margin: 18px 0 6px; }
.sub, .muted { color: var(--muted); }
.verdict { border-radius: 8px; padding: 16px 20px; margin: 18px 0; border: 2px solid; }
.verdict.ok { background: var(--okbg); border-color: var(--ok); color: var(--ok); }
.verdict.bad { background: var(--badbg); border-color: var(--bad); color: var(--bad); }
.verdict h2 { border: 0; margin: 0 0 6px; font-size: 22px; color: inherit; }
.verdict ul { color: var(--ink); margin: 8px 0 0; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: 10px; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: 8px 12px; }
.card b { display: block; font-size: 22px; }
table { border-collapse: collapse; width: 100%; margin: 6px 0 12px; }
th, td { text-align: left; vertical-align: top; border-bottom: 1px solid var(--line); padding: 5px 8px; }
th { background: #f4f6fa; font-weight: 600; }
code, .mono { font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 12px; word-break: break-all; }
.tag { display: inline-block; border-radius: 4px; padding: 0 6px; font-size: 12px; font-weight: 600; }
.tag.release { background: var(--okbg); color: var(--ok); }
.tag.denial { background: var(--badbg); color: var(--bad); }
.tag.sim { background: var(--warnbg); color: var(--warn); }
.tag.other { background: #eef1f6; color: var(--muted); }
article { border: 1px solid var(--line); border-radius: 8px; padding: 4px 16px 8px; margin: 12px 0; page-break-inside: avoid; }
dl { display: grid; grid-template-columns: 190px 1fr; gap: 2px 12px; margin: 8px 0; }
dt { color: var(--muted); }
dd { margin: 0; }
.notice { background: var(--warnbg); border-left: 4px solid var(--warn); padding: 6px 10px; margin: 4px 0; }
footer { margin-top: 36px; border-top: 1px solid var(--line); padding-top: 10px; color: var(--muted); font-size: 12px; }
@media print { body { padding: 0; max-width: none; } h2 { page-break-after: avoid; } }
"#;

fn tag(kind: &str, simulated: bool) -> String {
    let (class, text) = match kind {
        "release" => ("release", "released"),
        "denial" => ("denial", "denied"),
        "artifact" => ("other", "artifact"),
        "object" => ("other", "upload"),
        "dataset" => ("other", "registered"),
        _ => ("other", kind),
    };
    let sim = if simulated { " <span class=\"tag sim\">SIMULATED</span>" } else { "" };
    format!("<span class=\"tag {class}\">{text}</span>{sim}")
}

fn text_of(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "—".into(),
        serde_json::Value::Object(m) => m
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| format!("{k} {}", text_of(v)))
            .collect::<Vec<_>>()
            .join(", "),
        other => other.to_string(),
    }
}

fn row(out: &mut String, name: &str, value: &str, mono: bool) {
    let class = if mono { " class=\"mono\"" } else { "" };
    let _ = write!(out, "<dt>{}</dt><dd{class}>{}</dd>", esc(name), esc(value));
}

/// The hardware a release ran on, from the claims the audit re-derived.
fn evidence(out: &mut String, ev: &serde_json::Value) {
    let cpu = &ev["cpu"];
    let kind = cpu["kind"].as_str().unwrap_or("?");
    let platform = cpu["platform"].as_str().unwrap_or("?");
    out.push_str("<dl>");
    match kind {
        "snp" => {
            row(out, "CPU platform", &format!("AMD SEV-SNP ({platform})"), false);
            row(out, "Product", &text_of(&cpu["product"]), false);
            row(out, "TCB (reported)", &text_of(&cpu["reported_tcb"]), false);
            row(out, "Measurement", &text_of(&cpu["measurement"]), true);
            row(out, "Chip id", &text_of(&cpu["chip_id"]), true);
            row(out, "Host data", &text_of(&cpu["host_data"]), true);
            row(out, "Guest policy", &text_of(&cpu["policy"]), false);
        }
        "tdx" => {
            row(out, "CPU platform", &format!("Intel TDX ({platform})"), false);
            row(out, "TCB status", &text_of(&cpu["tcb_status"]), false);
            row(out, "FMSPC", &text_of(&cpu["fmspc"]), true);
            row(out, "MRTD", &text_of(&cpu["td"]["mr_td"]), true);
            row(out, "MRCONFIGID", &text_of(&cpu["td"]["mr_config_id"]), true);
        }
        other => row(out, "CPU platform", other, false),
    }
    let gpus = ev["gpus"].as_array().cloned().unwrap_or_default();
    if gpus.is_empty() {
        row(out, "GPUs", "none attested", false);
    }
    for (i, g) in gpus.iter().enumerate() {
        row(
            out,
            &format!("GPU {i}"),
            &format!(
                "{} ({}), driver {}, VBIOS {}, CC mode {}",
                text_of(&g["arch"]),
                text_of(&g["platform"]),
                text_of(&g["driver_version"]),
                text_of(&g["vbios_version"]),
                text_of(&g["cc_mode"])
            ),
            false,
        );
    }
    out.push_str("</dl>");
    let _ = write!(
        out,
        "<details><summary class=\"muted\">Every claim, as re-verified</summary><pre class=\"mono\">{}</pre></details>",
        esc(&serde_json::to_string_pretty(ev).unwrap_or_default())
    );
}

/// What the page says about where the report came from.
#[derive(Debug)]
pub struct Source {
    /// `https://…` or the export directory.
    pub from: String,
    /// When the report was made (Unix seconds).
    pub made_at: u64,
    /// Simulated roots were trusted (a development audit).
    pub simulated_roots: bool,
}

/// The whole page.
pub fn html(r: &Report, src: &Source) -> String {
    let mut o = String::new();
    let _ = write!(
        o,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Coffre audit report — {}</title><style>{STYLE}</style></head><body>",
        esc(&r.log)
    );
    let _ = write!(
        o,
        "<header><h1>Coffre audit report</h1><p class=\"sub\">Transparency log <span class=\"mono\">{}</span>, from {}; audited {} by <code>coffre {}</code>.</p></header>",
        esc(&r.log),
        esc(&src.from),
        utc(src.made_at),
        env!("CARGO_PKG_VERSION")
    );

    // The verdict first.
    if r.ok() {
        let _ = write!(
            o,
            "<section id=\"verdict\" class=\"verdict ok\"><h2>Verdict: OK</h2><p>The log is complete and untampered up to its signed checkpoint (size {}), and every one of its {} release(s) is justified by its evidence, re-verified against the pinned vendor roots, and by the policies in force.</p></section>",
            r.checkpoint_size, r.releases
        );
    } else {
        let _ = write!(
            o,
            "<section id=\"verdict\" class=\"verdict bad\"><h2>Verdict: {} DISCREPANC{}</h2><p>The log does not audit clean. Each finding names its entry:</p><ul>",
            r.problems.len(),
            if r.problems.len() == 1 { "Y" } else { "IES" }
        );
        for p in &r.problems {
            let at = p.entry.map(|e| format!("entry {e}: ")).unwrap_or_default();
            let _ = write!(o, "<li><b>{}</b>{}</li>", esc(&at), esc(&p.reason));
        }
        o.push_str("</ul></section>");
    }
    if src.simulated_roots {
        o.push_str("<p class=\"notice\"><b>Development audit.</b> Simulated roots were trusted: releases on simulated evidence verify here and would not in a production audit.</p>");
    }
    for n in &r.notices {
        let at = n.entry.map(|e| format!("entry {e}: ")).unwrap_or_default();
        let _ = write!(o, "<p class=\"notice\">{}{}</p>", esc(&at), esc(&n.reason));
    }

    o.push_str("<section id=\"summary\"><h2>In numbers</h2><div class=\"cards\">");
    for (n, label) in [
        (r.entries_audited, "entries audited"),
        (r.releases, "key releases"),
        (r.simulated_releases, "on simulated evidence"),
        (r.denials, "denials"),
        (r.artifacts, "models registered"),
        (r.policies_activated, "policy activations"),
        (r.approver_set_changes, "approver-set changes"),
        (r.redacted, "other tenants' entries (redacted)"),
    ] {
        let _ = write!(o, "<div class=\"card\"><b>{n}</b>{label}</div>");
    }
    o.push_str("</div></section>");

    // Per dataset: everything that touched it, in log order.
    let mut by_dataset: BTreeMap<&str, Vec<&Event>> = BTreeMap::new();
    for e in &r.events {
        if matches!(e.kind, "dataset" | "object" | "release" | "denial" | "artifact") {
            for d in &e.datasets {
                by_dataset.entry(d.as_str()).or_default().push(e);
            }
        }
    }
    o.push_str("<section id=\"timeline\"><h2>Timeline per dataset</h2>");
    if by_dataset.is_empty() {
        o.push_str("<p class=\"muted\">No dataset in this log.</p>");
    }
    for (d, events) in &by_dataset {
        let _ = write!(
            o,
            "<h3>Dataset <code>{}</code></h3><table><tr><th>When</th><th>Entry</th><th>What</th><th>Job</th><th>Policies</th></tr>",
            esc(d)
        );
        for e in events {
            let _ = write!(
                o,
                "<tr><td>{}</td><td>{}</td><td>{} {}</td><td class=\"mono\">{}</td><td>{}</td></tr>",
                utc(e.at),
                e.index,
                tag(e.kind, e.simulated),
                esc(&e.summary),
                esc(e.job.as_deref().unwrap_or("")),
                esc(&e.policies.join(", "))
            );
        }
        o.push_str("</table>");
    }
    o.push_str("</section>");

    // Who approved each policy version.
    let mut approvers: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for e in r.events.iter().filter(|e| e.kind == "policy_approved") {
        for p in &e.policies {
            approvers.entry(p.as_str()).or_default().extend(e.approvers.iter().map(String::as_str));
        }
    }
    let approved_by =
        |p: &str| approvers.get(p).map(|s| s.iter().copied().collect::<Vec<_>>().join(", ")).unwrap_or_default();

    o.push_str("<section id=\"releases\"><h2>Releases</h2>");
    let releases: Vec<&Event> = r.events.iter().filter(|e| e.kind == "release").collect();
    if releases.is_empty() {
        o.push_str("<p class=\"muted\">No key was released.</p>");
    }
    for e in &releases {
        let _ = write!(
            o,
            "<article class=\"release\"><h3>Release at entry {} — {} {}</h3><dl>",
            e.index,
            utc(e.at),
            tag("release", e.simulated)
        );
        row(&mut o, "Tenant", &e.tenant, false);
        match (&e.job, &e.subject) {
            (None, Some(resource)) => row(&mut o, "KBS resource", resource, true),
            _ => row(&mut o, "Job", e.job.as_deref().unwrap_or(""), true),
        }
        row(&mut o, "Datasets", &e.datasets.join(", "), false);
        for p in &e.policies {
            row(&mut o, &format!("Policy {p}"), &format!("approved by {}", approved_by(p)), false);
        }
        o.push_str("</dl>");
        match &e.evidence {
            Some(ev) => evidence(&mut o, ev),
            None => o.push_str(
                "<p class=\"verdict bad\">The audit could not re-verify this release's evidence (see the verdict).</p>",
            ),
        }
        o.push_str("</article>");
    }
    o.push_str("</section>");

    o.push_str("<section id=\"denials\"><h2>Denials</h2>");
    let denials: Vec<&Event> = r.events.iter().filter(|e| e.kind == "denial").collect();
    if denials.is_empty() {
        o.push_str("<p class=\"muted\">No release was denied.</p>");
    }
    for e in &denials {
        let _ = write!(
            o,
            "<article class=\"denial\"><h3>Denial at entry {} — {} {}</h3><p>Tenant {}, job <code>{}</code>{}. Every check that failed:</p><table><tr><th>Policy</th><th>Check</th><th>Expected</th><th>Found</th></tr>",
            e.index,
            utc(e.at),
            tag("denial", false),
            esc(&e.tenant),
            esc(e.job.as_deref().unwrap_or("—")),
            if e.datasets.is_empty() { String::new() } else { format!(" (datasets {})", esc(&e.datasets.join(", "))) }
        );
        for f in &e.failed {
            let _ = write!(
                o,
                "<tr><td>{}</td><td class=\"mono\">{}</td><td>{}</td><td>{}</td></tr>",
                esc(if f.policy.is_empty() { "—" } else { &f.policy }),
                esc(&f.name),
                esc(&f.expected),
                esc(&f.actual)
            );
        }
        o.push_str("</table></article>");
    }
    o.push_str("</section>");

    // Lineage: dataset → job → release → artifact.
    o.push_str("<section id=\"lineage\"><h2>Lineage: dataset → job → release → model</h2><table><tr><th>Datasets</th><th>Job</th><th>Release</th><th>Model</th><th>Registered</th></tr>");
    let artifacts: Vec<&Event> = r.events.iter().filter(|e| e.kind == "artifact").collect();
    if artifacts.is_empty() {
        o.push_str("<tr><td colspan=\"5\" class=\"muted\">No model was registered.</td></tr>");
    }
    for a in &artifacts {
        let _ = write!(
            o,
            "<tr><td>{}</td><td class=\"mono\">{}</td><td>entry {}</td><td class=\"mono\">{}</td><td>{} (entry {})</td></tr>",
            esc(&a.datasets.join(", ")),
            esc(a.job.as_deref().unwrap_or("")),
            a.release.map(|r| r.to_string()).unwrap_or_default(),
            esc(a.subject.as_deref().unwrap_or("")),
            utc(a.at),
            a.index
        );
    }
    o.push_str("</table></section>");

    o.push_str("<section id=\"policies\"><h2>Policies and their approvers</h2><table><tr><th>When</th><th>Entry</th><th>Event</th></tr>");
    for e in
        r.events.iter().filter(|e| matches!(e.kind, "approvers" | "policy_approved" | "policy_activated" | "config"))
    {
        let _ = write!(o, "<tr><td>{}</td><td>{}</td><td>{}</td></tr>", utc(e.at), e.index, esc(&e.summary));
    }
    o.push_str("</table></section>");

    let _ = write!(
        o,
        "<footer id=\"log\"><p><b>Log key</b> <span class=\"mono\">{}</span><br><b>Signed checkpoint</b> size {}, root <span class=\"mono\">{}</span>; {} earlier checkpoint(s) checked against the entries.</p><p>Re-verify this yourself, offline: <code>coffre audit verify --dir EXPORT --log-key {}</code>. This page holds no script and loads nothing; it was generated from the audit, which verified every release's evidence again.</p></footer></body></html>",
        esc(&r.log),
        r.checkpoint_size,
        esc(&r.root),
        r.checkpoints_checked,
        esc(&r.log)
    );
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_escaping() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(1_796_592_789), "2026-12-06 21:33:09 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(esc("<script>\"&'"), "&lt;script&gt;&quot;&amp;&#39;");
    }
}
