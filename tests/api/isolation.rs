//! A randomized, model-based check of the access rules.
//!
//! Three tenants with three members each call through member keys, a
//! service key acting as each member (`x-actor-id`), and an admin key. A
//! seeded random sequence of a few thousand calls (AddNote, also for
//! another owner and on owner-only subjects, UpdateNote, GetNote,
//! ListNotes, DeleteNote, UndeleteNote, ListNoteRevisions, RegisterSubject,
//! SearchNotes, BatchGetNotes, BatchAddNotes all or none and with
//! `partial_success`, BatchDeleteNotes) aims at the callers' own notes, at
//! other tenants' notes and at notes that do not exist. An in-test model of
//! every note and registered subject predicts each outcome from the rules
//! of `proto/notes/v1/*.proto`; every response (code, ErrorInfo reason, for
//! a batch the ErrorInfo `index` of the failing item or each item's result,
//! and on success the note's fields, the listed or found ids in order, the
//! revisions) is checked against it. Note bodies and titles hold words of a
//! small vocabulary (as typed: mixed case) and a token of their own, so
//! that a search for a word matches many notes and one for a token at most
//! one.
//!
//! The seed is `NOTESD_ISOLATION_SEED` (decimal or 0x-hex) or a fixed
//! default, and the number of operations `NOTESD_ISOLATION_OPERATIONS`; a
//! failure prints both, so it can be replayed.

use std::collections::BTreeMap;

use notesd::proto::notes::v1::subjects_service_client::SubjectsServiceClient;
use notesd::proto::notes::v1::{self as pb, ChangeKind, EditPolicy, Visibility};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tonic::Code;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::helpers::*;

const TENANTS: [&str; 3] = ["acme", "globex", "initech"];
/// The same member names in every tenant: a name is no passport.
const MEMBERS: [&str; 3] = ["alice", "bob", "carol"];
/// The member each tenant's admin key is recorded as.
const ADMIN: &str = "ops";
const SUBJECT_TYPE: &str = "customer";
/// Notes are about `customer/c-0` .. `c-5`, in every tenant; only the first
/// four are ever registered, so some subjects always take notes from all.
const SUBJECTS: usize = 6;
const REGISTERED_SUBJECTS: usize = 4;
const DEFAULT_SEED: u64 = 0x1501_a7ed;
const DEFAULT_OPERATIONS: usize = 3000;
/// A listing that needs more pages than this is a violation (a loop).
const MAX_PAGES: usize = 500;
/// The words of note bodies and titles, which searches look for: few, so
/// that each matches many notes.
const VOCABULARY: [&str; 8] = [
    "amber", "birch", "cobalt", "dune", "ember", "fjord", "garnet", "harbor",
];
/// How each note's own token starts (`tok<op>x<k>`).
const TOKEN_PREFIX: &str = "tok";

type Registry = SubjectsServiceClient<InterceptedService<Channel, Metadata>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyType {
    Member,
    Service,
    Admin,
}

struct Caller {
    tenant: usize,
    member: String,
    key: KeyType,
    notes: Client,
    subjects: Registry,
}

impl Caller {
    fn admin(&self) -> bool {
        self.key == KeyType::Admin
    }

    fn label(&self) -> String {
        format!(
            "{}/{} ({:?} key)",
            TENANTS[self.tenant], self.member, self.key
        )
    }
}

async fn caller(
    app: &TestApp,
    tenant: usize,
    member: &str,
    key: KeyType,
    metadata: Vec<(&'static str, String)>,
) -> Caller {
    let channel = app.channel().await;
    Caller {
        tenant,
        member: member.to_owned(),
        key,
        notes: pb::notes_service_client::NotesServiceClient::with_interceptor(
            channel.clone(),
            Metadata(metadata.clone()),
        ),
        subjects: SubjectsServiceClient::with_interceptor(channel, Metadata(metadata)),
    }
}

/// Per tenant: each member through a member key and through the tenant's
/// service key, and the admin key.
async fn callers(app: &TestApp) -> Vec<Caller> {
    let mut callers = Vec::new();
    for (t, tenant) in TENANTS.iter().enumerate() {
        let service = app.service_key(tenant).await;
        for member in MEMBERS {
            let key = app.member_key(tenant, member).await;
            callers.push(caller(app, t, member, KeyType::Member, vec![("x-api-key", key)]).await);
            let metadata = vec![
                ("x-api-key", service.clone()),
                ("x-actor-id", member.to_owned()),
            ];
            callers.push(caller(app, t, member, KeyType::Service, metadata).await);
        }
        let admin = app.admin_key(tenant, ADMIN).await;
        callers.push(caller(app, t, ADMIN, KeyType::Admin, vec![("x-api-key", admin)]).await);
    }
    callers
}

/// What the model knows of a note.
#[derive(Debug, Clone, PartialEq)]
struct ModelNote {
    id: String,
    tenant: usize,
    /// The id of its `customer` subject.
    subject: String,
    owner: String,
    creator: String,
    updater: String,
    visibility: Visibility,
    edit_policy: EditPolicy,
    draft: bool,
    deleted: bool,
    title: String,
    text: String,
    /// occur_time as (seconds, nanos).
    occur: (i64, i32),
    /// The current etag, as last returned; empty right after a change the
    /// model has predicted but not yet seen.
    etag: String,
    /// Every earlier etag.
    old_etags: Vec<String>,
    /// One entry per revision: what changed and who changed it.
    changes: Vec<(ChangeKind, String)>,
}

/// A rule outcome other than OK.
type Failure = (Code, &'static str);

const ETAG_MISMATCH: Failure = (Code::Aborted, "ETAG_MISMATCH");
const NOTE_DELETED: Failure = (Code::FailedPrecondition, "NOTE_DELETED");
const NOTE_NOT_DELETED: Failure = (Code::FailedPrecondition, "NOTE_NOT_DELETED");

// ---------------------------------------------------------------------------
// The rules, as the contract states them.
// ---------------------------------------------------------------------------

fn can_read(caller: &Caller, note: &ModelNote) -> bool {
    caller.tenant == note.tenant
        && (caller.admin()
            || note.owner == caller.member
            || (note.visibility == Visibility::Team && !note.draft))
}

fn can_edit(caller: &Caller, note: &ModelNote) -> bool {
    caller.admin() || note.owner == caller.member || note.edit_policy == EditPolicy::Team
}

fn is_owner(caller: &Caller, note: &ModelNote) -> bool {
    caller.admin() || note.owner == caller.member
}

/// Whether a search for `word` matches the note: the `simple`
/// configuration, case-insensitive, words as typed, in the title or the
/// text. The test writes words separated by spaces, so splitting at
/// anything but letters and digits finds the words PostgreSQL finds.
fn has_word(note: &ModelNote, word: &str) -> bool {
    let word = word.to_lowercase();
    [&note.title, &note.text].into_iter().any(|text| {
        text.split(|c: char| !c.is_alphanumeric())
            .any(|w| w.to_lowercase() == word)
    })
}

/// The note's own token, if its text has one.
fn token_of(note: &ModelNote) -> Option<&str> {
    note.text
        .split_whitespace()
        .find(|w| w.starts_with(TOKEN_PREFIX))
}

/// The ErrorInfo metadata `index` of a failed batch call.
fn error_index(status: &tonic::Status) -> Option<usize> {
    use tonic_types::StatusExt as _;
    status
        .get_details_error_info()?
        .metadata
        .get("index")?
        .parse()
        .ok()
}

/// The field changes of one UpdateNote.
#[derive(Debug, Default)]
struct Patch {
    subject: Option<String>,
    owner: Option<String>,
    visibility: Option<Visibility>,
    edit_policy: Option<EditPolicy>,
    draft: Option<bool>,
    title: Option<String>,
    text: Option<String>,
    occur: Option<chrono::DateTime<chrono::Utc>>,
}

impl Patch {
    fn request(&self, id: &str) -> (pb::Note, Vec<&'static str>) {
        let mut note = patch(id);
        let mut paths = Vec::new();
        if let Some(s) = &self.subject {
            note.subject = subject(SUBJECT_TYPE, s);
            paths.push("subject");
        }
        if let Some(o) = &self.owner {
            note.owner_id = o.clone();
            paths.push("owner_id");
        }
        if let Some(v) = self.visibility {
            note.visibility = v as i32;
            paths.push("visibility");
        }
        if let Some(e) = self.edit_policy {
            note.edit_policy = e as i32;
            paths.push("edit_policy");
        }
        if let Some(d) = self.draft {
            note.draft = d;
            paths.push("draft");
        }
        if let Some(t) = &self.title {
            note.title = t.clone();
            paths.push("title");
        }
        if let Some(t) = &self.text {
            note.body = text_body(t);
            paths.push("body");
        }
        if let Some(o) = self.occur {
            note.occur_time = timestamp(o);
            paths.push("occur_time");
        }
        (note, paths)
    }

    fn apply(&self, note: &mut ModelNote) {
        if let Some(s) = &self.subject {
            note.subject = s.clone();
        }
        if let Some(o) = &self.owner {
            note.owner = o.clone();
        }
        if let Some(v) = self.visibility {
            note.visibility = v;
        }
        if let Some(e) = self.edit_policy {
            note.edit_policy = e;
        }
        if let Some(d) = self.draft {
            note.draft = d;
        }
        if let Some(t) = &self.title {
            note.title = t.clone();
        }
        if let Some(t) = &self.text {
            note.text = t.clone();
        }
        if let Some(o) = self.occur {
            note.occur = pair(o);
        }
    }
}

fn pair(time: chrono::DateTime<chrono::Utc>) -> (i64, i32) {
    (time.timestamp(), time.timestamp_subsec_nanos() as i32)
}

fn occur_of(note: &pb::Note) -> Option<(i64, i32)> {
    note.occur_time.as_ref().map(|t| (t.seconds, t.nanos))
}

/// How `got` differs from the model's `want`; the etag is compared only
/// when the model knows it.
fn diff(want: &ModelNote, got: &pb::Note) -> Vec<String> {
    let mut d = Vec::new();
    macro_rules! field {
        ($name:literal, $want:expr, $got:expr) => {
            if $want != $got {
                d.push(format!("{}: want {:?}, got {:?}", $name, $want, $got));
            }
        };
    }
    field!("id", want.id.as_str(), got.id.as_str());
    field!(
        "subject",
        Some((SUBJECT_TYPE, want.subject.as_str())),
        got.subject
            .as_ref()
            .map(|s| (s.r#type.as_str(), s.id.as_str()))
    );
    field!("owner_id", want.owner.as_str(), got.owner_id.as_str());
    field!("creator_id", want.creator.as_str(), got.creator_id.as_str());
    field!("updater_id", want.updater.as_str(), got.updater_id.as_str());
    field!("visibility", want.visibility, got.visibility());
    field!("edit_policy", want.edit_policy, got.edit_policy());
    field!("draft", want.draft, got.draft);
    field!("deleted", want.deleted, got.delete_time.is_some());
    field!("title", want.title.as_str(), got.title.as_str());
    field!("body.text", want.text.as_str(), body_text(got));
    field!("revision", want.changes.len() as i64, got.revision);
    field!("occur_time", Some(want.occur), occur_of(got));
    if !want.etag.is_empty() {
        field!("etag", want.etag.as_str(), got.etag.as_str());
    }
    d
}

/// An expected note or failure, by reference.
fn shape(expected: &Result<ModelNote, Failure>) -> Result<&ModelNote, Failure> {
    expected.as_ref().map_err(|e| *e)
}

fn brief(note: &pb::Note) -> String {
    format!(
        "note {} owner {} {:?} {:?} draft {} rev {}",
        note.id,
        note.owner_id,
        note.visibility(),
        note.edit_policy(),
        note.draft,
        note.revision
    )
}

fn status_text(status: &tonic::Status) -> String {
    format!(
        "{:?} {} ({})",
        status.code(),
        reason(status),
        status.message()
    )
}

// ---------------------------------------------------------------------------
// The run: a model, a random source, and what went wrong.
// ---------------------------------------------------------------------------

struct World {
    rng: StdRng,
    notes: Vec<ModelNote>,
    by_tenant: Vec<Vec<usize>>,
    /// (tenant, subject id) -> (owner, owner_only_notes).
    registry: BTreeMap<(usize, String), (String, bool)>,
    op: usize,
    violations: Vec<String>,
    /// Expected outcomes seen, by operation and outcome.
    outcomes: BTreeMap<String, usize>,
    calls: usize,
}

/// Which note an operation aims at: a model note (by index) or an id that
/// names no note.
#[derive(Debug, Clone, Copy)]
enum Target {
    Note(usize),
    Missing,
}

/// The ListNotes filters the test uses (SearchNotes has the same ones).
#[derive(Debug, Default)]
struct Filters {
    subject: Option<String>,
    owner: Option<String>,
    show_deleted: bool,
}

/// One AddNote as the test builds it, and what the model expects of it.
struct PlannedAdd {
    request: pb::Note,
    /// The note expected, but for what the server chooses: its id, its
    /// default occur_time and its etag.
    model: ModelNote,
    /// The occur_time sent, if any.
    occur: Option<chrono::DateTime<chrono::Utc>>,
    expected: Result<(), Failure>,
    /// Its name in the tally.
    rpc: String,
    what: String,
}

impl PlannedAdd {
    /// The model's note for this add, which the server answered with `note`.
    fn created(&self, note: &pb::Note) -> ModelNote {
        let mut model = self.model.clone();
        model.id = note.id.clone();
        model.occur = self
            .occur
            .map_or_else(|| occur_of(note).unwrap_or_default(), pair);
        model
    }
}

impl World {
    fn new(seed: u64) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
            notes: Vec::new(),
            by_tenant: vec![Vec::new(); TENANTS.len()],
            registry: BTreeMap::new(),
            op: 0,
            violations: Vec::new(),
            outcomes: BTreeMap::new(),
            calls: 0,
        }
    }

    fn violation(&mut self, caller: &Caller, what: &str, detail: String) {
        self.violations.push(format!(
            "op {} {what} by {}: {detail}",
            self.op,
            caller.label()
        ));
    }

    /// Counts the expected outcome of an operation and where it aimed, to
    /// show (and require) that a run exercises every rule.
    fn tally(&mut self, rpc: &str, expected: &Result<(), Failure>, aim: &str) {
        let outcome = match expected {
            Ok(()) => "OK",
            Err((_, reason)) => reason,
        };
        *self
            .outcomes
            .entry(format!("{rpc} {outcome}{aim}"))
            .or_default() += 1;
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.rng.random_range(0..items.len())]
    }

    fn any_member(&mut self) -> String {
        let i = self.rng.random_range(0..=MEMBERS.len());
        MEMBERS.get(i).copied().unwrap_or(ADMIN).to_owned()
    }

    fn any_subject(&mut self, among: usize) -> String {
        format!("c-{}", self.rng.random_range(0..among))
    }

    /// Mostly a note of the caller's tenant, often any tenant's, sometimes
    /// none at all.
    fn target(&mut self, tenant: usize) -> Target {
        let roll = self.rng.random_range(0..100);
        if roll < 5 || self.notes.is_empty() {
            return Target::Missing;
        }
        let own = &self.by_tenant[tenant];
        if roll < 55 && !own.is_empty() {
            return Target::Note(own[self.rng.random_range(0..own.len())]);
        }
        Target::Note(self.rng.random_range(0..self.notes.len()))
    }

    fn target_id(&self, target: Target) -> String {
        match target {
            Target::Note(i) => self.notes[i].id.clone(),
            Target::Missing => uuid::Uuid::now_v7().to_string(),
        }
    }

    /// Where an operation aimed, for the tally: at another tenant's note,
    /// at no note, or (empty) at a note of the caller's tenant.
    fn aim(&self, caller: &Caller, target: Target) -> &'static str {
        match target {
            Target::Note(i) if self.notes[i].tenant != caller.tenant => " (other tenant)",
            Target::Note(_) => "",
            Target::Missing => " (no such note)",
        }
    }

    /// An owner-only subject of the caller's tenant that the caller may not
    /// add notes to.
    fn subject_closed_to(&self, caller: &Caller, subject: &str) -> bool {
        !caller.admin()
            && self
                .registry
                .get(&(caller.tenant, subject.to_owned()))
                .is_some_and(|(owner, only)| *only && *owner != caller.member)
    }

    /// A word of the vocabulary, as someone might type it.
    fn typed(&mut self, word: &str) -> String {
        match self.rng.random_range(0..4) {
            0 => word.to_uppercase(),
            1 => {
                let mut chars = word.chars();
                chars.next().map_or_else(String::new, |first| {
                    first.to_uppercase().chain(chars).collect()
                })
            }
            _ => word.to_owned(),
        }
    }

    /// A note's text: three words of the vocabulary, the note's own token
    /// (the `k`th note written by this operation), and who wrote it.
    fn note_text(&mut self, caller: &Caller, k: usize) -> String {
        let words: Vec<String> = (0..3)
            .map(|_| {
                let word = self.pick(&VOCABULARY);
                self.typed(word)
            })
            .collect();
        format!(
            "{} {TOKEN_PREFIX}{}x{k} by {}",
            words.join(" "),
            self.op,
            caller.label()
        )
    }

    /// A note's title, sometimes with a word of the vocabulary.
    fn note_title(&mut self) -> String {
        let n = self.rng.random_range(0..3);
        if self.rng.random_bool(0.3) {
            let word = self.pick(&VOCABULARY);
            format!("title {n} {}", self.typed(word))
        } else {
            format!("title {n}")
        }
    }

    /// Often (with probability `bias`) a note of the caller's tenant that
    /// `fits`, when there is one; else any target.
    fn target_fitting(
        &mut self,
        caller: &Caller,
        bias: f64,
        fits: fn(&Caller, &ModelNote) -> bool,
    ) -> Target {
        if self.rng.random_bool(bias) {
            let fitting: Vec<usize> = self.by_tenant[caller.tenant]
                .iter()
                .copied()
                .filter(|&i| fits(caller, &self.notes[i]))
                .collect();
            if !fitting.is_empty() {
                return Target::Note(fitting[self.rng.random_range(0..fitting.len())]);
            }
        }
        self.target(caller.tenant)
    }

    /// The notes the caller can read that pass `filters` (and hold `word`,
    /// when given), newest occur_time first, then newest id: the order of
    /// ListNotes and of SearchNotes by newest.
    fn visible(&self, caller: &Caller, filters: &Filters, word: Option<&str>) -> Vec<ModelNote> {
        let mut want: Vec<&ModelNote> = self.by_tenant[caller.tenant]
            .iter()
            .map(|&i| &self.notes[i])
            .filter(|n| {
                can_read(caller, n)
                    && filters.subject.as_ref().is_none_or(|s| n.subject == *s)
                    && filters.owner.as_ref().is_none_or(|o| n.owner == *o)
                    && (filters.show_deleted || !n.deleted)
                    && word.is_none_or(|w| has_word(n, w))
            })
            .collect();
        want.sort_by(|a, b| (b.occur, &b.id).cmp(&(a.occur, &a.id)));
        want.into_iter().cloned().collect()
    }

    /// Compares the notes a listing (or search) returned with the model's.
    fn compare_listing(
        &mut self,
        caller: &Caller,
        what: &str,
        want: &[ModelNote],
        got: &[pb::Note],
    ) {
        let want_ids: Vec<&str> = want.iter().map(|n| n.id.as_str()).collect();
        let got_ids: Vec<&str> = got.iter().map(|n| n.id.as_str()).collect();
        if want_ids != got_ids {
            let missing: Vec<&str> = want_ids
                .iter()
                .filter(|id| !got_ids.contains(id))
                .copied()
                .collect();
            let extra: Vec<String> = got
                .iter()
                .filter(|n| !want_ids.contains(&n.id.as_str()))
                .map(brief)
                .collect();
            self.violation(
                caller,
                what,
                format!(
                    "listed {} notes, want {}; missing {missing:?}; unexpected {extra:?}{}",
                    got_ids.len(),
                    want_ids.len(),
                    if missing.is_empty() && extra.is_empty() {
                        "; out of order"
                    } else {
                        ""
                    }
                ),
            );
            return;
        }
        for (want, got) in want.iter().zip(got) {
            let d = diff(want, got);
            if !d.is_empty() {
                self.violation(caller, what, format!("listed note differs: {d:?}"));
            }
        }
    }

    /// Compares a batch call's outcome with the expected failure and the
    /// index of the item that causes it (`None`: success); returns the
    /// response when both agree that the call succeeded.
    fn judge_batch<T>(
        &mut self,
        caller: &Caller,
        what: &str,
        expected: Option<(Failure, usize)>,
        got: Result<T, tonic::Status>,
    ) -> Option<T> {
        self.calls += 1;
        match (expected, got) {
            (Some(((code, reason_), index)), Err(status)) => {
                let got_index = error_index(&status);
                if status.code() != code || reason(&status) != reason_ || got_index != Some(index) {
                    self.violation(
                        caller,
                        what,
                        format!(
                            "want {code:?} {reason_} at index {index}, got {} at index {got_index:?}",
                            status_text(&status)
                        ),
                    );
                }
                None
            }
            (Some(((code, reason_), index)), Ok(_)) => {
                self.violation(
                    caller,
                    what,
                    format!("want {code:?} {reason_} at index {index}, got OK"),
                );
                None
            }
            (None, Err(status)) => {
                self.violation(
                    caller,
                    what,
                    format!("want OK, got {}", status_text(&status)),
                );
                None
            }
            (None, Ok(response)) => Some(response),
        }
    }

    /// Compares a call's result with the expected failure or note; returns
    /// the returned note when both agree that the call succeeded.
    fn judge(
        &mut self,
        caller: &Caller,
        what: &str,
        expected: Result<&ModelNote, Failure>,
        got: Result<pb::Note, tonic::Status>,
    ) -> Option<pb::Note> {
        self.calls += 1;
        match (expected, got) {
            (Err((code, reason_)), Err(status)) => {
                if status.code() != code || reason(&status) != reason_ {
                    self.violation(
                        caller,
                        what,
                        format!("want {code:?} {reason_}, got {}", status_text(&status)),
                    );
                }
                None
            }
            (Err((code, reason_)), Ok(note)) => {
                self.violation(
                    caller,
                    what,
                    format!("want {code:?} {reason_}, got OK: {}", brief(&note)),
                );
                None
            }
            (Ok(_), Err(status)) => {
                self.violation(
                    caller,
                    what,
                    format!("want OK, got {}", status_text(&status)),
                );
                None
            }
            (Ok(want), Ok(note)) => {
                let d = diff(want, &note);
                if !d.is_empty() {
                    self.violation(caller, what, format!("returned note differs: {d:?}"));
                }
                Some(note)
            }
        }
    }

    /// Takes a changed note into the model, with the etag the server gave
    /// it, which must be new.
    fn commit(&mut self, caller: &Caller, what: &str, i: usize, mut next: ModelNote, etag: &str) {
        let current = &self.notes[i];
        if next.changes.len() > current.changes.len() {
            let reused = etag == current.etag || current.old_etags.iter().any(|e| e == etag);
            next.old_etags.push(current.etag.clone());
            next.etag = etag.to_owned();
            if reused {
                self.violation(caller, what, format!("etag {etag:?} was used before"));
            }
        }
        self.notes[i] = next;
    }

    // -----------------------------------------------------------------------
    // Operations.
    // -----------------------------------------------------------------------

    /// An AddNote as the add operations send it (the `k`th note of the
    /// operation), and what the model expects of it.
    fn plan_add(&mut self, caller: &Caller, k: usize) -> PlannedAdd {
        let subject_id = self.any_subject(SUBJECTS);
        let owner_id = match self.rng.random_range(0..10) {
            0..=5 => String::new(),
            6 => caller.member.clone(),
            _ => self.any_member(),
        };
        let visibility = self.pick(&[
            Visibility::Unspecified,
            Visibility::Private,
            Visibility::Private,
            Visibility::Team,
            Visibility::Team,
        ]);
        let edit_policy = self.pick(&[
            EditPolicy::Unspecified,
            EditPolicy::OwnerOnly,
            EditPolicy::OwnerOnly,
            EditPolicy::Team,
            EditPolicy::Team,
        ]);
        let draft = self.rng.random_bool(0.2);
        let occur = self
            .rng
            .random_bool(0.5)
            .then(|| at_minute(self.rng.random_range(0..30)));
        let title = self.note_title();
        let text = self.note_text(caller, k);
        let request = pb::Note {
            subject: subject(SUBJECT_TYPE, &subject_id),
            owner_id: owner_id.clone(),
            visibility: visibility as i32,
            edit_policy: edit_policy as i32,
            draft,
            title: title.clone(),
            body: text_body(&text),
            occur_time: occur.and_then(timestamp),
            ..Default::default()
        };
        let owner = if owner_id.is_empty() {
            caller.member.clone()
        } else {
            owner_id.clone()
        };
        // Only an admin creates notes for someone else; an owner-only
        // subject takes notes from its owner (and admins) only.
        let for_another = owner != caller.member && !caller.admin();
        let expected = if for_another || self.subject_closed_to(caller, &subject_id) {
            Err(NOT_OWNER)
        } else {
            Ok(())
        };
        let rpc = if owner == caller.member {
            "AddNote"
        } else {
            "AddNote for another owner"
        };
        let rpc = if self
            .registry
            .get(&(caller.tenant, subject_id.clone()))
            .is_some_and(|(_, only)| *only)
        {
            format!("{rpc} on an owner-only subject")
        } else {
            rpc.to_owned()
        };
        let what = format!("{rpc} about {subject_id} owner {owner_id:?}");
        let model = ModelNote {
            id: String::new(),
            tenant: caller.tenant,
            subject: subject_id,
            owner,
            creator: caller.member.clone(),
            updater: caller.member.clone(),
            visibility: match visibility {
                Visibility::Unspecified => Visibility::Team,
                v => v,
            },
            edit_policy: match edit_policy {
                EditPolicy::Unspecified => EditPolicy::OwnerOnly,
                e => e,
            },
            draft,
            deleted: false,
            title,
            text,
            occur: (0, 0),
            etag: String::new(),
            old_etags: Vec::new(),
            changes: vec![(ChangeKind::Created, caller.member.clone())],
        };
        PlannedAdd {
            request,
            model,
            occur,
            expected,
            rpc,
            what,
        }
    }

    /// Takes a created note into the model, with the etag the server gave it.
    fn remember(&mut self, mut model: ModelNote, etag: String) {
        model.etag = etag;
        self.by_tenant[model.tenant].push(self.notes.len());
        self.notes.push(model);
    }

    async fn add_note(&mut self, caller: &mut Caller) {
        let plan = self.plan_add(caller, 0);
        self.tally(&plan.rpc, &plan.expected, "");
        let got = try_add(&mut caller.notes, plan.request.clone()).await;
        // The id, the default occur_time and the etag are the server's.
        let model = match &got {
            Ok(note) => plan.created(note),
            Err(_) => plan.model.clone(),
        };
        let expected = plan.expected.map(|()| &model);
        let Some(note) = self.judge(caller, &plan.what, expected, got) else {
            return;
        };
        self.remember(model, note.etag);
    }

    /// BatchAddNotes of one to four notes, each built as `add_note` builds
    /// it, some with a request id (a new one each). All or none: OK when
    /// every note would be added alone, else the first refused one's error,
    /// and nothing written. With `partial_success`: each note's outcome is
    /// the one AddNote would have.
    async fn batch_add_notes(&mut self, caller: &mut Caller, partial: bool) {
        let count = self.rng.random_range(1..=4);
        let plans: Vec<PlannedAdd> = (0..count).map(|k| self.plan_add(caller, k)).collect();
        let requests: Vec<pb::AddNoteRequest> = plans
            .iter()
            .map(|plan| pb::AddNoteRequest {
                request_id: if self.rng.random_bool(0.3) {
                    uuid::Uuid::now_v7().to_string()
                } else {
                    String::new()
                },
                note: Some(plan.request.clone()),
            })
            .collect();
        let what = format!(
            "BatchAddNotes partial_success {partial} [{}]",
            plans
                .iter()
                .map(|p| p.what.as_str())
                .collect::<Vec<_>>()
                .join("; ")
        );
        let got = caller
            .notes
            .batch_add_notes(pb::BatchAddNotesRequest {
                requests,
                partial_success: partial,
            })
            .await
            .map(|r| r.into_inner());
        if partial {
            for plan in &plans {
                self.tally("BatchAddNotes partial_success item", &plan.expected, "");
            }
            let Some(response) = self.judge_batch(caller, &what, None, got) else {
                return;
            };
            if !response.notes.is_empty() || response.results.len() != count {
                self.violation(
                    caller,
                    &what,
                    format!(
                        "want {count} results and no notes, got {} results and {} notes",
                        response.results.len(),
                        response.notes.len()
                    ),
                );
                return;
            }
            for (k, (plan, result)) in plans.iter().zip(response.results).enumerate() {
                match (plan.expected, result.note, result.error) {
                    (Ok(()), Some(note), None) => {
                        let model = plan.created(&note);
                        let d = diff(&model, &note);
                        if !d.is_empty() {
                            self.violation(
                                caller,
                                &what,
                                format!("result {k}: returned note differs: {d:?}"),
                            );
                        }
                        self.remember(model, note.etag);
                    }
                    (Err((code, reason_)), None, Some(error))
                        if error.code == code as i32 && error.reason == reason_ => {}
                    (expected, note, error) => self.violation(
                        caller,
                        &what,
                        format!(
                            "result {k}: want {expected:?}, got note {:?} error {error:?}",
                            note.as_ref().map(brief)
                        ),
                    ),
                }
            }
            return;
        }
        let first_refused = plans
            .iter()
            .enumerate()
            .find_map(|(k, plan)| plan.expected.err().map(|failure| (failure, k)));
        self.tally(
            "BatchAddNotes",
            &first_refused.map_or(Ok(()), |(failure, _)| Err(failure)),
            match first_refused {
                Some((_, k)) if k > 0 => " at a later index",
                _ => "",
            },
        );
        let Some(response) = self.judge_batch(caller, &what, first_refused, got) else {
            return;
        };
        if !response.results.is_empty() || response.notes.len() != count {
            self.violation(
                caller,
                &what,
                format!(
                    "want {count} notes and no results, got {} notes and {} results",
                    response.notes.len(),
                    response.results.len()
                ),
            );
            return;
        }
        for (k, (plan, note)) in plans.iter().zip(response.notes).enumerate() {
            let model = plan.created(&note);
            let d = diff(&model, &note);
            if !d.is_empty() {
                self.violation(
                    caller,
                    &what,
                    format!("note {k}: returned note differs: {d:?}"),
                );
            }
            self.remember(model, note.etag);
        }
    }

    async fn register(&mut self, caller: &mut Caller) {
        let subject_id = self.any_subject(REGISTERED_SUBJECTS);
        let owner_id = match self.rng.random_range(0..10) {
            0..=5 => String::new(),
            6 | 7 => caller.member.clone(),
            _ => self.any_member(),
        };
        let owner_only = self.rng.random_bool(0.5);
        let owner = if owner_id.is_empty() {
            caller.member.clone()
        } else {
            owner_id.clone()
        };
        let key = (caller.tenant, subject_id.clone());
        let existing = self.registry.get(&key).map(|(o, _)| o.clone());
        // An admin registers anything; a member registers a new subject for
        // itself, and changes (or hands over) only a registration it owns.
        let allowed =
            caller.admin() || existing.map_or(owner == caller.member, |o| o == caller.member);
        let expected = if allowed { Ok(()) } else { Err(NOT_OWNER) };
        self.tally("RegisterSubject", &expected, "");
        let what =
            format!("RegisterSubject {subject_id} owner {owner_id:?} owner_only {owner_only}");
        let got = caller
            .subjects
            .register_subject(pb::RegisterSubjectRequest {
                registration: Some(pb::SubjectRegistration {
                    subject: subject(SUBJECT_TYPE, &subject_id),
                    owner_id,
                    owner_only_notes: owner_only,
                    ..Default::default()
                }),
            })
            .await
            .map(|r| r.into_inner().registration.unwrap_or_default());
        self.calls += 1;
        match (expected, got) {
            (Ok(()), Ok(reg)) => {
                let got = (
                    reg.subject.as_ref().map(|s| s.id.as_str()),
                    reg.owner_id.as_str(),
                    reg.owner_only_notes,
                );
                let want = (Some(subject_id.as_str()), owner.as_str(), owner_only);
                if got != want {
                    self.violation(caller, &what, format!("want {want:?}, got {got:?}"));
                }
                self.registry.insert(key, (owner, owner_only));
            }
            (Ok(()), Err(status)) => {
                self.violation(
                    caller,
                    &what,
                    format!("want OK, got {}", status_text(&status)),
                );
            }
            (Err((code, reason_)), Ok(reg)) => {
                self.violation(
                    caller,
                    &what,
                    format!("want {code:?} {reason_}, got OK: {reg:?}"),
                );
            }
            (Err((code, reason_)), Err(status)) => {
                if status.code() != code || reason(&status) != reason_ {
                    self.violation(
                        caller,
                        &what,
                        format!("want {code:?} {reason_}, got {}", status_text(&status)),
                    );
                }
            }
        }
    }

    async fn get_note(&mut self, caller: &mut Caller) {
        let target = self.target(caller.tenant);
        let id = self.target_id(target);
        let expected = match target {
            Target::Note(i) if can_read(caller, &self.notes[i]) => Ok(self.notes[i].clone()),
            _ => Err(NOT_FOUND),
        };
        self.tally(
            "GetNote",
            &shape(&expected).map(|_| ()),
            self.aim(caller, target),
        );
        let got = get(&mut caller.notes, &id).await;
        self.judge(caller, &format!("GetNote {id}"), shape(&expected), got);
    }

    async fn update_note(&mut self, caller: &mut Caller) {
        let target = self.target(caller.tenant);
        let id = self.target_id(target);
        let mut change = Patch::default();
        while change.request(&id).1.is_empty() {
            if self.rng.random_bool(0.4) {
                change.title = Some(self.note_title());
            }
            if self.rng.random_bool(0.3) {
                change.text = Some(self.note_text(caller, 0));
            }
            if self.rng.random_bool(0.2) {
                change.visibility = Some(self.pick(&[Visibility::Private, Visibility::Team]));
            }
            if self.rng.random_bool(0.2) {
                change.edit_policy = Some(self.pick(&[EditPolicy::OwnerOnly, EditPolicy::Team]));
            }
            if self.rng.random_bool(0.2) {
                change.draft = Some(self.rng.random_bool(0.3));
            }
            if self.rng.random_bool(0.15) {
                change.owner = Some(self.any_member());
            }
            if self.rng.random_bool(0.1) {
                change.occur = Some(at_minute(self.rng.random_range(0..30)));
            }
            // Moving a note onto another subject: another tenant's note
            // stays NOT_FOUND whatever the subject.
            if self.rng.random_bool(0.15) {
                change.subject = Some(self.any_subject(SUBJECTS));
            }
        }
        let (etag, stale) = self.etag_for(target);
        let (mut request, paths) = change.request(&id);
        request.etag = etag.clone();

        let expected = (|| {
            let Target::Note(i) = target else {
                return Err(NOT_FOUND);
            };
            let current = &self.notes[i];
            if !can_read(caller, current) {
                return Err(NOT_FOUND);
            }
            if stale {
                return Err(ETAG_MISMATCH);
            }
            if !can_edit(caller, current) {
                return Err(NOT_OWNER);
            }
            let mut next = current.clone();
            change.apply(&mut next);
            if next.subject != current.subject && self.subject_closed_to(caller, &next.subject) {
                return Err(NOT_OWNER);
            }
            let owner_fields_change = next.owner != current.owner
                || next.visibility != current.visibility
                || next.edit_policy != current.edit_policy
                || next.draft != current.draft;
            if owner_fields_change && !is_owner(caller, current) {
                return Err(NOT_OWNER);
            }
            if current.deleted {
                return Err(NOTE_DELETED);
            }
            if next != *current {
                next.updater = caller.member.clone();
                next.changes
                    .push((ChangeKind::Updated, caller.member.clone()));
                next.etag = String::new();
            }
            Ok(next)
        })();
        let onto_owner_only = change.subject.as_ref().is_some_and(|s| {
            self.registry
                .get(&(caller.tenant, s.clone()))
                .is_some_and(|(_, only)| *only)
        });
        let rpc = if onto_owner_only {
            "UpdateNote onto an owner-only subject"
        } else {
            "UpdateNote"
        };
        self.tally(rpc, &shape(&expected).map(|_| ()), self.aim(caller, target));
        let what = format!("UpdateNote {id} {paths:?} {change:?} etag {etag:?}");
        let got = update(&mut caller.notes, request, &paths).await;
        if let (Some(note), Target::Note(i), Ok(next)) = (
            self.judge(caller, &what, shape(&expected), got),
            target,
            &expected,
        ) {
            self.commit(caller, &what, i, next.clone(), &note.etag);
        }
    }

    /// No etag mostly; sometimes the current one, sometimes a stale one.
    fn etag_for(&mut self, target: Target) -> (String, bool) {
        let roll = self.rng.random_range(0..10);
        let Target::Note(i) = target else {
            return (String::new(), false);
        };
        let note = &self.notes[i];
        match roll {
            7 | 8 => (note.etag.clone(), false),
            9 if !note.old_etags.is_empty() => {
                let k = self.rng.random_range(0..note.old_etags.len());
                (self.notes[i].old_etags[k].clone(), true)
            }
            _ => (String::new(), false),
        }
    }

    /// The note after DeleteNote (`deleting`) or UndeleteNote by the caller,
    /// with a stale etag or not, or why it fails.
    fn deletion(
        &self,
        caller: &Caller,
        target: Target,
        stale: bool,
        deleting: bool,
    ) -> Result<ModelNote, Failure> {
        let Target::Note(i) = target else {
            return Err(NOT_FOUND);
        };
        let current = &self.notes[i];
        if !can_read(caller, current) {
            return Err(NOT_FOUND);
        }
        if stale {
            return Err(ETAG_MISMATCH);
        }
        if !can_edit(caller, current) {
            return Err(NOT_OWNER);
        }
        match (deleting, current.deleted) {
            (true, true) => return Err(NOTE_DELETED),
            (false, false) => return Err(NOTE_NOT_DELETED),
            _ => {}
        }
        let mut next = current.clone();
        next.deleted = deleting;
        next.updater = caller.member.clone();
        let kind = if deleting {
            ChangeKind::Deleted
        } else {
            ChangeKind::Undeleted
        };
        next.changes.push((kind, caller.member.clone()));
        next.etag = String::new();
        Ok(next)
    }

    async fn set_deleted(&mut self, caller: &mut Caller, deleting: bool) {
        let deleted: Vec<usize> = (0..self.notes.len())
            .filter(|&i| self.notes[i].deleted)
            .collect();
        let target = if !deleting && !deleted.is_empty() && self.rng.random_bool(0.5) {
            Target::Note(deleted[self.rng.random_range(0..deleted.len())])
        } else {
            self.target(caller.tenant)
        };
        let id = self.target_id(target);
        let (etag, stale) = self.etag_for(target);
        let expected = self.deletion(caller, target, stale, deleting);
        let rpc = if deleting {
            "DeleteNote"
        } else {
            "UndeleteNote"
        };
        self.tally(rpc, &shape(&expected).map(|_| ()), self.aim(caller, target));
        let what = format!("{rpc} {id} etag {etag:?}");
        let got = if deleting {
            delete(&mut caller.notes, &id, &etag).await
        } else {
            undelete(&mut caller.notes, &id, &etag).await
        };
        if let (Some(note), Target::Note(i), Ok(next)) = (
            self.judge(caller, &what, shape(&expected), got),
            target,
            &expected,
        ) {
            self.commit(caller, &what, i, next.clone(), &note.etag);
        }
    }

    async fn list_notes(&mut self, caller: &mut Caller) {
        let filters = Filters {
            subject: self
                .rng
                .random_bool(0.3)
                .then(|| self.any_subject(SUBJECTS)),
            owner: self.rng.random_bool(0.3).then(|| self.any_member()),
            show_deleted: self.rng.random_bool(0.4),
        };
        let page_size = self.pick(&[0, 7, 50, 1000]);
        let mut request = pb::ListNotesRequest {
            page_size,
            subject: filters
                .subject
                .as_deref()
                .and_then(|s| subject(SUBJECT_TYPE, s)),
            owner_id: filters.owner.clone().unwrap_or_default(),
            show_deleted: filters.show_deleted,
            ..Default::default()
        };
        let what = format!("ListNotes {filters:?} page_size {page_size}");
        let want = self.visible(caller, &filters, None);
        *self
            .outcomes
            .entry(format!(
                "ListNotes {}",
                if want.is_empty() {
                    "empty"
                } else {
                    "non-empty"
                }
            ))
            .or_default() += 1;

        let mut got = Vec::new();
        for page in 0.. {
            self.calls += 1;
            match list(&mut caller.notes, request.clone()).await {
                Ok(response) => {
                    got.extend(response.notes);
                    if response.next_page_token.is_empty() {
                        break;
                    }
                    request.page_token = response.next_page_token;
                }
                Err(status) => {
                    self.violation(
                        caller,
                        &what,
                        format!("page {page} failed: {}", status_text(&status)),
                    );
                    return;
                }
            }
            if page == MAX_PAGES {
                self.violation(caller, &what, format!("more than {MAX_PAGES} pages"));
                return;
            }
        }
        self.compare_listing(caller, &what, &want, &got);
    }

    /// SearchNotes, newest first, for a word of the vocabulary (as typed:
    /// any case) or, sometimes, a note's own token, with at most one
    /// ListNotes filter, paged with small pages: exactly the notes ListNotes
    /// would list with that filter that hold the word, in its order, each
    /// with its word marked in the snippet.
    async fn search_notes(&mut self, caller: &mut Caller) {
        let token = if self.rng.random_bool(0.2) {
            match self.target_fitting(caller, 0.5, can_read) {
                Target::Note(i) => token_of(&self.notes[i]).map(str::to_owned),
                Target::Missing => None,
            }
        } else {
            None
        };
        let query = match token {
            Some(token) => token,
            None => {
                let word = self.pick(&VOCABULARY);
                self.typed(word)
            }
        };
        let filters = Filters {
            subject: None,
            owner: None,
            show_deleted: self.rng.random_bool(0.4),
        };
        let filters = match self.rng.random_range(0..4) {
            0 => Filters {
                subject: Some(self.any_subject(SUBJECTS)),
                ..filters
            },
            1 => Filters {
                owner: Some(self.any_member()),
                ..filters
            },
            _ => filters,
        };
        let page_size = self.pick(&[2, 3, 5, 0]);
        let order = self.pick(&[pb::SearchOrder::Unspecified, pb::SearchOrder::Newest]);
        let mut request = pb::SearchNotesRequest {
            query: query.clone(),
            page_size,
            order: order as i32,
            subject: filters
                .subject
                .as_deref()
                .and_then(|s| subject(SUBJECT_TYPE, s)),
            owner_id: filters.owner.clone().unwrap_or_default(),
            show_deleted: filters.show_deleted,
            ..Default::default()
        };
        let what = format!("SearchNotes {query:?} {filters:?} {order:?} page_size {page_size}");
        let want = self.visible(caller, &filters, Some(&query));
        *self
            .outcomes
            .entry(format!(
                "SearchNotes {}{}",
                if query.starts_with(TOKEN_PREFIX) {
                    "for a token "
                } else {
                    ""
                },
                if want.is_empty() {
                    "empty"
                } else {
                    "non-empty"
                }
            ))
            .or_default() += 1;

        let mut got = Vec::new();
        let mark = format!("<mark>{}</mark>", query.to_lowercase());
        for page in 0.. {
            self.calls += 1;
            match caller.notes.search_notes(request.clone()).await {
                Ok(response) => {
                    let response = response.into_inner();
                    for hit in response.hits {
                        if !hit.snippet.to_lowercase().contains(&mark) {
                            self.violation(
                                caller,
                                &what,
                                format!("snippet {:?} does not mark the word", hit.snippet),
                            );
                        }
                        got.extend(hit.note);
                    }
                    if response.next_page_token.is_empty() {
                        break;
                    }
                    request.page_token = response.next_page_token;
                }
                Err(status) => {
                    self.violation(
                        caller,
                        &what,
                        format!("page {page} failed: {}", status_text(&status)),
                    );
                    return;
                }
            }
            if page == MAX_PAGES {
                self.violation(caller, &what, format!("more than {MAX_PAGES} pages"));
                return;
            }
        }
        self.compare_listing(caller, &what, &want, &got);
    }

    /// BatchGetNotes of one to five targets, mostly notes the caller can
    /// read: all the notes in order, or NOT_FOUND naming the first one it
    /// cannot.
    async fn batch_get_notes(&mut self, caller: &mut Caller) {
        let count = self.rng.random_range(1..=5);
        let targets: Vec<Target> = (0..count)
            .map(|_| {
                if self.rng.random_bool(0.05) {
                    Target::Missing
                } else {
                    self.target_fitting(caller, 0.8, can_read)
                }
            })
            .collect();
        let ids: Vec<String> = targets.iter().map(|&t| self.target_id(t)).collect();
        let unreadable = targets.iter().position(|&t| match t {
            Target::Note(i) => !can_read(caller, &self.notes[i]),
            Target::Missing => true,
        });
        let expected = unreadable.map(|k| (NOT_FOUND, k));
        let aim = unreadable.map_or("", |k| self.aim(caller, targets[k]));
        self.tally(
            "BatchGetNotes",
            &expected.map_or(Ok(()), |(failure, _)| Err(failure)),
            aim,
        );
        let what = format!("BatchGetNotes {ids:?}");
        let got = caller
            .notes
            .batch_get_notes(pb::BatchGetNotesRequest { ids })
            .await
            .map(|r| r.into_inner().notes);
        let Some(notes) = self.judge_batch(caller, &what, expected, got) else {
            return;
        };
        let want: Vec<ModelNote> = targets
            .iter()
            .filter_map(|&t| match t {
                Target::Note(i) => Some(self.notes[i].clone()),
                Target::Missing => None,
            })
            .collect();
        self.compare_listing(caller, &what, &want, &notes);
    }

    /// BatchDeleteNotes of one to three distinct targets, mostly notes the
    /// caller may delete, sometimes ones already deleted, each with an etag as `set_deleted` sends it: all
    /// deleted, or the first refused one's DeleteNote error and none.
    async fn batch_delete_notes(&mut self, caller: &mut Caller) {
        fn deletable(caller: &Caller, note: &ModelNote) -> bool {
            can_read(caller, note) && can_edit(caller, note) && !note.deleted
        }
        fn deleted(caller: &Caller, note: &ModelNote) -> bool {
            can_read(caller, note) && can_edit(caller, note) && note.deleted
        }
        let count = self.rng.random_range(1..=3);
        let mut targets: Vec<Target> = Vec::new();
        for _ in 0..count {
            let fits = if self.rng.random_bool(0.05) {
                deleted
            } else {
                deletable
            };
            let target = self.target_fitting(caller, 0.8, fits);
            let repeated = targets
                .iter()
                .any(|t| matches!((t, target), (Target::Note(a), Target::Note(b)) if *a == b));
            if !repeated {
                targets.push(target);
            }
        }
        let mut requests = Vec::new();
        let mut outcomes = Vec::new();
        for &target in &targets {
            let (etag, stale) = self.etag_for(target);
            requests.push(pb::DeleteNoteRequest {
                id: self.target_id(target),
                etag,
            });
            outcomes.push(self.deletion(caller, target, stale, true));
        }
        let refused = outcomes
            .iter()
            .enumerate()
            .find_map(|(k, outcome)| outcome.as_ref().err().map(|failure| (*failure, k)));
        let aim = refused.map_or("", |(_, k)| self.aim(caller, targets[k]));
        self.tally(
            "BatchDeleteNotes",
            &refused.map_or(Ok(()), |(failure, _)| Err(failure)),
            aim,
        );
        let what = format!(
            "BatchDeleteNotes {:?}",
            requests
                .iter()
                .map(|r| (r.id.as_str(), r.etag.as_str()))
                .collect::<Vec<_>>()
        );
        let got = caller
            .notes
            .batch_delete_notes(pb::BatchDeleteNotesRequest { requests })
            .await
            .map(|r| r.into_inner().notes);
        let Some(notes) = self.judge_batch(caller, &what, refused, got) else {
            return;
        };
        if notes.len() != targets.len() {
            self.violation(
                caller,
                &what,
                format!("want {} notes, got {}", targets.len(), notes.len()),
            );
            return;
        }
        for ((target, next), note) in targets.into_iter().zip(outcomes).zip(notes) {
            let (Target::Note(i), Ok(next)) = (target, next) else {
                continue;
            };
            let d = diff(&next, &note);
            if !d.is_empty() {
                self.violation(caller, &what, format!("returned note differs: {d:?}"));
            }
            self.commit(caller, &what, i, next, &note.etag);
        }
    }

    async fn list_revisions(&mut self, caller: &mut Caller) {
        let target = self.target(caller.tenant);
        let id = self.target_id(target);
        let page_size = self.pick(&[0, 1, 3, 1000]);
        let expected = match target {
            Target::Note(i) if can_read(caller, &self.notes[i]) => Ok(self.notes[i].clone()),
            _ => Err(NOT_FOUND),
        };
        self.tally(
            "ListNoteRevisions",
            &shape(&expected).map(|_| ()),
            self.aim(caller, target),
        );
        let what = format!("ListNoteRevisions {id} page_size {page_size}");
        let mut token = String::new();
        let mut got = Vec::new();
        for page in 0.. {
            self.calls += 1;
            let response = revisions(&mut caller.notes, &id, page_size, &token).await;
            match (&expected, response) {
                (Err((code, reason_)), Err(status)) => {
                    if status.code() != *code || reason(&status) != *reason_ {
                        self.violation(
                            caller,
                            &what,
                            format!("want {code:?} {reason_}, got {}", status_text(&status)),
                        );
                    }
                    return;
                }
                (Err((code, reason_)), Ok(response)) => {
                    self.violation(
                        caller,
                        &what,
                        format!(
                            "want {code:?} {reason_}, got OK with {} revisions",
                            response.revisions.len()
                        ),
                    );
                    return;
                }
                (Ok(_), Err(status)) => {
                    self.violation(
                        caller,
                        &what,
                        format!("page {page}: want OK, got {}", status_text(&status)),
                    );
                    return;
                }
                (Ok(_), Ok(response)) => {
                    got.extend(response.revisions);
                    if response.next_page_token.is_empty() {
                        break;
                    }
                    token = response.next_page_token;
                }
            }
            if page == MAX_PAGES {
                self.violation(caller, &what, format!("more than {MAX_PAGES} pages"));
                return;
            }
        }
        let Ok(note) = expected else { return };
        let want: Vec<(i64, ChangeKind, &str)> = note
            .changes
            .iter()
            .enumerate()
            .rev()
            .map(|(k, (kind, actor))| (k as i64 + 1, *kind, actor.as_str()))
            .collect();
        let got: Vec<(i64, ChangeKind, &str)> = got
            .iter()
            .map(|r| (r.revision, r.change_kind(), r.actor_id.as_str()))
            .collect();
        if want != got {
            self.violation(
                caller,
                &what,
                format!("revisions differ: want {want:?}, got {got:?}"),
            );
        }
    }
}

/// A number from the environment, decimal or 0x-hex.
fn env_number(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    let value = value.trim();
    let parsed = match value.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => value.parse(),
    };
    Some(parsed.unwrap_or_else(|_| panic!("{name} is not a number: {value:?}")))
}

/// The outcomes a run must have exercised to mean anything.
const REQUIRED_OUTCOMES: &[&str] = &[
    "AddNote OK",
    "AddNote for another owner NOT_OWNER",
    "AddNote for another owner OK",
    "AddNote on an owner-only subject NOT_OWNER",
    "AddNote on an owner-only subject OK",
    "RegisterSubject OK",
    "RegisterSubject NOT_OWNER",
    "GetNote OK",
    "GetNote NOT_FOUND",
    "GetNote NOT_FOUND (other tenant)",
    "GetNote NOT_FOUND (no such note)",
    "UpdateNote OK",
    "UpdateNote NOT_OWNER",
    "UpdateNote NOT_FOUND",
    "UpdateNote NOT_FOUND (other tenant)",
    "UpdateNote NOTE_DELETED",
    "UpdateNote ETAG_MISMATCH",
    "UpdateNote onto an owner-only subject NOT_OWNER",
    "DeleteNote OK",
    "DeleteNote NOT_OWNER",
    "DeleteNote NOTE_DELETED",
    "DeleteNote NOT_FOUND (other tenant)",
    "UndeleteNote OK",
    "UndeleteNote NOT_OWNER",
    "UndeleteNote NOTE_NOT_DELETED",
    "UndeleteNote NOT_FOUND (other tenant)",
    "ListNotes non-empty",
    "ListNoteRevisions OK",
    "ListNoteRevisions NOT_FOUND",
    "ListNoteRevisions NOT_FOUND (other tenant)",
    "SearchNotes non-empty",
    "SearchNotes for a token empty",
    "SearchNotes for a token non-empty",
    "BatchGetNotes OK",
    "BatchGetNotes NOT_FOUND",
    "BatchGetNotes NOT_FOUND (other tenant)",
    "BatchGetNotes NOT_FOUND (no such note)",
    "BatchAddNotes OK",
    "BatchAddNotes NOT_OWNER",
    "BatchAddNotes NOT_OWNER at a later index",
    "BatchAddNotes partial_success item OK",
    "BatchAddNotes partial_success item NOT_OWNER",
    "BatchDeleteNotes OK",
    "BatchDeleteNotes NOT_FOUND",
    "BatchDeleteNotes NOT_FOUND (other tenant)",
    "BatchDeleteNotes NOT_OWNER",
    "BatchDeleteNotes NOTE_DELETED",
];

#[tokio::test]
async fn random_operations_never_cross_the_access_rules() {
    let seed = env_number("NOTESD_ISOLATION_SEED").unwrap_or(DEFAULT_SEED);
    let operations =
        env_number("NOTESD_ISOLATION_OPERATIONS").map_or(DEFAULT_OPERATIONS, |n| n as usize);
    let replay = format!("NOTESD_ISOLATION_SEED={seed} NOTESD_ISOLATION_OPERATIONS={operations}");
    println!("isolation: {replay}");

    let app = spawn_app().await;
    let mut callers = callers(&app).await;
    let mut world = World::new(seed);
    let started = std::time::Instant::now();
    for op in 0..operations {
        world.op = op;
        let who = world.rng.random_range(0..callers.len());
        let caller = &mut callers[who];
        match world.rng.random_range(0..115) {
            0..=24 => world.add_note(caller).await,
            25..=27 => world.register(caller).await,
            28..=45 => world.get_note(caller).await,
            46..=67 => world.update_note(caller).await,
            68..=75 => world.set_deleted(caller, true).await,
            76..=82 => world.set_deleted(caller, false).await,
            83..=90 => world.list_notes(caller).await,
            91..=99 => world.list_revisions(caller).await,
            100..=103 => world.search_notes(caller).await,
            104..=106 => world.batch_get_notes(caller).await,
            107..=108 => world.batch_add_notes(caller, false).await,
            109..=110 => world.batch_add_notes(caller, true).await,
            _ => world.batch_delete_notes(caller).await,
        }
    }
    println!(
        "isolation: {operations} operations, {} calls, {} notes in {:.1?}",
        world.calls,
        world.notes.len(),
        started.elapsed()
    );
    for (outcome, count) in &world.outcomes {
        println!("  {count:5}  {outcome}");
    }

    let missing: Vec<&&str> = REQUIRED_OUTCOMES
        .iter()
        .filter(|o| !world.outcomes.contains_key(**o))
        .collect();
    assert!(
        world.violations.is_empty(),
        "{} violations of the access rules in {operations} operations \
         (replay with {replay}); the first ones:\n{}",
        world.violations.len(),
        world
            .violations
            .iter()
            .take(10)
            .map(|v| format!("  {v}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        missing.is_empty() || operations < DEFAULT_OPERATIONS,
        "the run never exercised {missing:?} ({replay})"
    );
}
