//! `callguard top`: what callguard is stopping, live, in the terminal (ratatui), over the
//! control socket: packets a second by reason, the sources and signatures being dropped, recent
//! bans and call decisions, the kernel tables against their capacity. Keys: `s` sorts the
//! reasons (by rate, by total, by name), `p` pauses the view (the daemon goes on), `q` quits.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    time::{Duration, Instant},
};

use crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::{
    Frame,
    layout::{Constraint, Layout, Rect},
    style::{Modifier, Style, Stylize as _},
    text::Line,
    widgets::{Block, Cell, Paragraph, Row, Table},
};

use super::{client::Client, output::event_line};
use crate::api::control::{EventKind, EventRecord, Stats, Status, Tables};

/// How the reasons are ordered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sort {
    Rate,
    Total,
    Name,
}

impl Sort {
    const fn next(self) -> Self {
        match self {
            Self::Rate => Self::Total,
            Self::Total => Self::Name,
            Self::Name => Self::Rate,
        }
    }

    const fn name(self) -> &'static str {
        match self {
            Self::Rate => "rate",
            Self::Total => "total",
            Self::Name => "name",
        }
    }
}

/// One reading of the daemon.
struct Reading {
    at: Instant,
    stats: Stats,
    status: Status,
    events: Vec<EventRecord>,
    tables: Option<Tables>,
}

/// What the screen shows.
struct View {
    sort: Sort,
    paused: bool,
    last: Option<Reading>,
    /// Per (action, reason): packets a second over the last interval, and the total.
    reasons: Vec<(String, String, f64, u64)>,
    /// Per signature: text, requests a second, total.
    sigs: Vec<(String, f64, u64)>,
    /// Packets in and dropped a second.
    rates: (f64, f64),
    /// Why the last reading failed, while the daemon does not answer.
    error: Option<String>,
}

impl View {
    fn new() -> Self {
        Self {
            sort: Sort::Rate,
            paused: false,
            last: None,
            reasons: Vec::new(),
            sigs: Vec::new(),
            rates: (0.0, 0.0),
            error: None,
        }
    }

    /// Takes a new reading: rates against the one before.
    fn update(&mut self, r: Reading) {
        let before: HashMap<(String, String), u64> = self
            .last
            .as_ref()
            .map(|l| {
                l.stats.reasons.iter().map(|c| ((c.action.clone(), c.reason.clone()), c.packets)).collect()
            })
            .unwrap_or_default();
        let sig_before: HashMap<u32, u64> = self
            .last
            .as_ref()
            .map(|l| l.stats.sigs.iter().map(|s| (s.sig.id, s.packets)).collect())
            .unwrap_or_default();
        let secs = self.last.as_ref().map_or(0.0, |l| r.at.duration_since(l.at).as_secs_f64());
        let rate = |now: u64, then: Option<&u64>| match then {
            Some(t) if secs > 0.0 => now.saturating_sub(*t) as f64 / secs,
            _ => 0.0,
        };
        self.reasons = r
            .stats
            .reasons
            .iter()
            .map(|c| {
                let then = before.get(&(c.action.clone(), c.reason.clone()));
                let then = if self.last.is_some() { Some(then.unwrap_or(&0)) } else { None };
                (c.action.clone(), c.reason.clone(), rate(c.packets, then), c.packets)
            })
            .collect();
        self.rates = (
            self.reasons.iter().map(|r| r.2).sum(),
            self.reasons.iter().filter(|r| r.0 == "drop").map(|r| r.2).sum(),
        );
        self.sigs = r
            .stats
            .sigs
            .iter()
            .map(|s| {
                let then =
                    if self.last.is_some() { Some(sig_before.get(&s.sig.id).unwrap_or(&0)) } else { None };
                (s.sig.sig.text.clone(), rate(s.packets, then), s.packets)
            })
            .collect();
        self.sigs.sort_by(|a, b| b.1.total_cmp(&a.1).then(b.2.cmp(&a.2)));
        self.last = Some(r);
    }

    fn sorted_reasons(&self) -> Vec<&(String, String, f64, u64)> {
        let mut v: Vec<_> = self.reasons.iter().collect();
        match self.sort {
            Sort::Rate => v.sort_by(|a, b| b.2.total_cmp(&a.2).then(b.3.cmp(&a.3))),
            Sort::Total => v.sort_by_key(|r| std::cmp::Reverse(r.3)),
            Sort::Name => v.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1))),
        }
        v
    }

    fn draw(&self, f: &mut Frame<'_>) {
        let [head, middle, recent, foot] = Layout::vertical([
            Constraint::Length(2),
            Constraint::Min(8),
            Constraint::Length(9),
            Constraint::Length(2),
        ])
        .areas(f.area());
        self.draw_head(f, head);
        let [left, right] =
            Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(middle);
        self.draw_reasons(f, left);
        let [sources, sigs] =
            Layout::vertical([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(right);
        self.draw_sources(f, sources);
        self.draw_sigs(f, sigs);
        self.draw_recent(f, recent);
        self.draw_foot(f, foot);
    }

    fn draw_head(&self, f: &mut Frame<'_>, area: Rect) {
        let Some(r) = &self.last else {
            f.render_widget(Paragraph::new("callguard top: waiting for the daemon…"), area);
            return;
        };
        let st = &r.status;
        let ifaces: Vec<String> =
            st.interfaces.iter().map(|i| format!("{} ({:?})", i.name, i.mode)).collect();
        let mut line = vec![
            format!("callguard {}", st.version).bold(),
            format!("  up {}", humantime::format_duration(Duration::from_secs(st.uptime_secs))).into(),
            format!("  guarding {}", if ifaces.is_empty() { "nothing".into() } else { ifaces.join(", ") })
                .into(),
        ];
        if self.paused {
            line.push("  PAUSED".reversed());
        }
        if let Some(e) = &self.error {
            line.push(format!("  the daemon does not answer: {e}").reversed());
        }
        let rates = format!(
            "{:.0} packets/s decided, {:.0}/s dropped · rules: {} allow, {} deny, {} automatic bans",
            self.rates.0, self.rates.1, st.allow_rules, st.deny_rules, st.auto_bans
        );
        f.render_widget(Paragraph::new(vec![Line::from(line), Line::from(rates)]), area);
    }

    fn draw_reasons(&self, f: &mut Frame<'_>, area: Rect) {
        let rows = self.sorted_reasons().into_iter().map(|(action, reason, rate, total)| {
            let style = if action == "drop" {
                Style::default().add_modifier(Modifier::BOLD)
            } else {
                Style::default()
            };
            Row::new(vec![
                Cell::from(action.as_str()),
                Cell::from(reason.as_str()),
                Cell::from(format!("{rate:>10.0}")),
                Cell::from(format!("{total:>14}")),
            ])
            .style(style)
        });
        let table = Table::new(
            rows,
            [Constraint::Length(7), Constraint::Min(14), Constraint::Length(11), Constraint::Length(15)],
        )
        .header(Row::new(["action", "reason", "packets/s", "total"]).underlined())
        .block(Block::bordered().title(format!(" Packets by reason (sorted by {}) ", self.sort.name())));
        f.render_widget(table, area);
    }

    fn draw_sources(&self, f: &mut Frame<'_>, area: Rect) {
        let mut by: BTreeMap<IpAddr, (usize, String)> = BTreeMap::new();
        if let Some(r) = &self.last {
            for e in r.events.iter().filter(|e| e.kind == EventKind::Drop) {
                let slot = by.entry(e.source).or_insert((0, String::new()));
                slot.0 += 1;
                slot.1.clone_from(&e.reason);
            }
        }
        let mut top: Vec<_> = by.into_iter().collect();
        top.sort_by_key(|(_, (n, _))| std::cmp::Reverse(*n));
        let rows =
            top.into_iter().map(|(ip, (n, reason))| Row::new(vec![ip.to_string(), n.to_string(), reason]));
        let table = Table::new(rows, [Constraint::Min(24), Constraint::Length(8), Constraint::Min(12)])
            .header(Row::new(["source", "samples", "last reason"]).underlined())
            .block(Block::bordered().title(" Sources dropped (sampled drops, the last 200) "));
        f.render_widget(table, area);
    }

    fn draw_sigs(&self, f: &mut Frame<'_>, area: Rect) {
        let rows = self.sigs.iter().filter(|s| s.2 > 0).map(|(text, rate, total)| {
            Row::new(vec![text.clone(), format!("{rate:>8.1}"), format!("{total:>10}")])
        });
        let table = Table::new(rows, [Constraint::Min(20), Constraint::Length(9), Constraint::Length(11)])
            .header(Row::new(["signature", "req/s", "total"]).underlined())
            .block(Block::bordered().title(" Signatures matching "));
        f.render_widget(table, area);
    }

    fn draw_recent(&self, f: &mut Frame<'_>, area: Rect) {
        let lines: Vec<Line<'_>> = self
            .last
            .iter()
            .flat_map(|r| r.events.iter().rev())
            .filter(|e| matches!(e.kind, EventKind::Ban | EventKind::Call | EventKind::Guard))
            .take(usize::from(area.height.saturating_sub(2)))
            .map(|e| Line::from(event_line(e)))
            .collect();
        f.render_widget(
            Paragraph::new(lines).block(Block::bordered().title(" Recent bans and call decisions ")),
            area,
        );
    }

    fn draw_foot(&self, f: &mut Frame<'_>, area: Rect) {
        let tables = match self.last.as_ref().and_then(|r| r.tables.as_ref()) {
            Some(t) => {
                let mut parts: Vec<String> = t
                    .tables
                    .iter()
                    .map(|tb| {
                        let pct = if tb.capacity == 0 {
                            0.0
                        } else {
                            tb.entries as f64 * 100.0 / f64::from(tb.capacity)
                        };
                        format!("{} {}/{} ({pct:.0}%)", tb.map, tb.entries, tb.capacity)
                    })
                    .collect();
                parts.push(format!("banned by the kernel now: {}", t.banned));
                parts.join(" · ")
            }
            None => "kernel tables: not readable".into(),
        };
        let keys = "keys: s sort · p pause · q quit".dim();
        f.render_widget(Paragraph::new(vec![Line::from(tables), Line::from(keys)]), area);
    }
}

/// How long one reading of the daemon may take: a daemon that does not answer must not keep
/// the keys (q among them) from being read.
const READ_TIMEOUT: Duration = Duration::from_secs(3);

/// Reads the daemon once.
async fn read(client: &Client) -> anyhow::Result<Reading> {
    let read = async {
        Ok::<_, anyhow::Error>(Reading {
            at: Instant::now(),
            stats: client.get("/v1/stats").await?,
            status: client.get("/v1/status").await?,
            events: client.get("/v1/events").await?,
            tables: client.get("/v1/tables").await.ok(),
        })
    };
    tokio::time::timeout(READ_TIMEOUT, read)
        .await
        .map_err(|_| anyhow::anyhow!("no answer within {} s", READ_TIMEOUT.as_secs()))?
}

/// Puts the terminal back as it was, however `top` ends.
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

/// Runs the view until `q` (or Ctrl-C), reading the daemon every `every`.
pub(super) async fn run(client: &Client, every: Duration) -> anyhow::Result<()> {
    // Fails here, before the screen changes, when the daemon does not answer.
    let first = read(client).await?;
    let mut terminal = ratatui::init();
    let _restore = Restore;
    let mut view = View::new();
    view.update(first);
    loop {
        terminal.draw(|f| view.draw(f))?;
        let deadline = Instant::now() + every;
        // Keys until the next reading; each one redraws at once.
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            // crossterm's poll blocks: this worker thread waits, the runtime's others go on.
            let ev = tokio::task::block_in_place(|| -> std::io::Result<Option<Event>> {
                if event::poll(left)? { Ok(Some(event::read()?)) } else { Ok(None) }
            })?;
            match ev {
                Some(Event::Key(k)) if k.kind == KeyEventKind::Press => match k.code {
                    KeyCode::Char('q') | KeyCode::Esc => return Ok(()),
                    KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => return Ok(()),
                    KeyCode::Char('p') => view.paused = !view.paused,
                    KeyCode::Char('s') => view.sort = view.sort.next(),
                    _ => continue,
                },
                Some(Event::Resize(..)) => {}
                Some(_) => continue,
                None => break,
            }
            terminal.draw(|f| view.draw(f))?;
        }
        if !view.paused {
            match read(client).await {
                Ok(r) => {
                    view.error = None;
                    view.update(r);
                }
                // The daemon went away: say so on the screen's first line and keep trying.
                Err(e) => view.error = Some(format!("{e:#}")),
            }
        }
    }
}
