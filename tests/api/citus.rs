//! Citus, proven on the live catalog: the schema the migrations leave can
//! be distributed by `tenant_id` as docs/scale-out.md (step 3) does it, and
//! a migration that breaks a rule of Citus fails here, in CI, long before
//! anyone runs the runbook.
//!
//! The rules (`citus_violations`), for the tables of the public schema:
//!
//! - every table is classified: a *tenant table* has a `tenant_id` column
//!   and is distributed by it, co-located with `notes`; the others are on
//!   `REFERENCE_TABLES` (replicated to every node) or `COORDINATOR_TABLES`
//!   (plain tables on the coordinator), each with its reason;
//! - a tenant table's `tenant_id` is `text` (co-location needs one type) and
//!   not null (Citus refuses a row without its distribution column);
//! - every primary key, unique index and exclusion constraint of a tenant
//!   table is led by `tenant_id` (Citus enforces uniqueness per shard only);
//! - a foreign key between tenant tables has `tenant_id` at the same place
//!   on both sides; one from a tenant table may also reach a reference
//!   table; none joins a coordinator table to a distributed or reference one,
//!   nor a reference table to a tenant table;
//! - no column default of a tenant table comes from a sequence (or is an
//!   identity) unless on `SEQUENCE_DEFAULTS`, and every sequence is on
//!   `SEQUENCES`;
//! - no column default of a tenant table calls a function that is not
//!   immutable unless on `NODE_DEFAULTS`: Citus evaluates such a default on
//!   whichever node plans the insert (the coordinator for a statement routed
//!   through it, the worker inside a delegated function);
//! - every SQL or PL/pgSQL function of the schema that names a tenant table
//!   (or a view over one) takes the tenant, as a `text` argument named as
//!   in `TENANT_ARGUMENTS`, unless on `FUNCTIONS_WITHOUT_TENANT`: that is
//!   the argument `create_distributed_function` routes it by;
//! - every allow-list entry still names something in the schema.
//!
//! docs/scale-out.md mirrors each allow-list entry; a test below checks that
//! its DDL names every table and function the catalog has.

use std::collections::{BTreeMap, BTreeSet};

use sqlx::PgPool;
use sqlx::migrate::{Migration, MigrationType};

use crate::helpers::*;

/// Tables with a `tenant_id` that are not distributed by it: Citus
/// reference tables, one shard copied to every node.
const REFERENCE_TABLES: &[(&str, &str)] = &[
    (
        "api_keys",
        "a key is looked up by its id before its tenant is known (docs/access.md); \
         small, read by every call whose key is not cached, written by the CLI",
    ),
    (
        "quota_overrides",
        "every notesd reads all of it (docs/quotas.md), with keys' rows that \
         name api_keys; small, written by the CLI",
    ),
];

/// Tables without a `tenant_id` that stay plain tables on the coordinator.
const COORDINATOR_TABLES: &[(&str, &str)] = &[(
    "_sqlx_migrations",
    "sqlx's record of the applied migrations, read and written only by the \
     migrating connection, which runs on the coordinator",
)];

/// Every sequence of the schema, with where its values are taken.
const SEQUENCES: &[(&str, &str)] = &[(
    "note_number_seq",
    "the numeric note ids of the vendor facades (migration 3): nextval is \
     called by the INSERT ... SELECT of NoteStore::numbers, which Citus \
     evaluates on the coordinator, so the one sequence there numbers every \
     tenant; it is no column default, and off the write path of notes",
)];

/// Tenant-table columns whose default comes from a sequence: (table,
/// column, reason). None: ids are UUIDv7s made by notesd.
const SEQUENCE_DEFAULTS: &[(&str, &str, &str)] = &[];

/// Tenant-table columns whose default calls a function that is not
/// immutable: (table, column, reason).
const NODE_DEFAULTS: &[(&str, &str, &str)] = &[(
    "note_events",
    "xid",
    "pg_current_xact_id(), the change stream's position (migration 10): it \
     is only meaningful on the node that holds the tenant's shards, so under \
     Citus every write of an event and every read of the outbox must run \
     there, in functions delegated by tenant (docs/scale-out.md, \"The change \
     stream\")",
)];

/// Functions that name a tenant table without taking the tenant: (name,
/// reason). None today: the trigger function `notesd_api_key_changed`
/// names no tenant table.
const FUNCTIONS_WITHOUT_TENANT: &[(&str, &str)] = &[];

/// Functions that take the tenant and still read across tenants, on
/// purpose: not delegated to a worker by their tenant, they run on the
/// coordinator (docs/scale-out.md lists them). (name, reason)
const COORDINATOR_FUNCTIONS: &[(&str, &str)] = &[(
    "notesd_subject_registered_elsewhere",
    "answers whether another tenant registered the subject (Zyntro's \
     WRONG_ORG): a query of every shard of subjects, run from the coordinator",
)];

/// How a function's tenant argument may be named.
const TENANT_ARGUMENTS: &[&str] = &["p_tenant", "p_tenant_id", "tenant", "tenant_id"];

/// The table every tenant table is co-located with.
const COLOCATION_ANCHOR: &str = "notes";

/// A table of the schema.
#[derive(Debug, sqlx::FromRow)]
struct Table {
    name: String,
    /// The type of its `tenant_id`, if it has one.
    tenant_type: Option<String>,
    tenant_not_null: Option<bool>,
}

/// How the rules see a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Tenant,
    Reference,
    Coordinator,
    Unclassified,
}

/// The public schema's tables, each with its kind.
async fn table_kinds(pool: &PgPool) -> (Vec<Table>, BTreeMap<String, Kind>) {
    let tables: Vec<Table> = sqlx::query_as(
        "select c.relname::text as name,
                format_type(a.atttypid, a.atttypmod) as tenant_type,
                a.attnotnull as tenant_not_null
         from pg_class c
         join pg_namespace n on n.oid = c.relnamespace
         left join pg_attribute a
             on a.attrelid = c.oid and a.attname = 'tenant_id' and not a.attisdropped
         where n.nspname = 'public' and c.relkind in ('r', 'p') and not c.relispartition
         order by 1",
    )
    .fetch_all(pool)
    .await
    .expect("reads the tables");
    let kinds = tables
        .iter()
        .map(|table| {
            let listed = |list: &[(&str, &str)]| list.iter().any(|(name, _)| *name == table.name);
            let kind = if listed(REFERENCE_TABLES) {
                Kind::Reference
            } else if listed(COORDINATOR_TABLES) {
                Kind::Coordinator
            } else if table.tenant_type.is_some() {
                Kind::Tenant
            } else {
                Kind::Unclassified
            };
            (table.name.clone(), kind)
        })
        .collect();
    (tables, kinds)
}

/// The tenant tables, and the views that read one of them: what a function
/// must take the tenant to name.
async fn tenant_relations(pool: &PgPool, kinds: &BTreeMap<String, Kind>) -> Vec<String> {
    let mut relations: Vec<String> = kinds
        .iter()
        .filter(|(_, kind)| **kind == Kind::Tenant)
        .map(|(name, _)| name.clone())
        .collect();
    let views: Vec<(String, String)> = sqlx::query_as(
        "select distinct v.relname::text, t.relname::text
         from pg_class v
         join pg_namespace n on n.oid = v.relnamespace
         join pg_rewrite r on r.ev_class = v.oid
         join pg_depend d
             on d.classid = 'pg_rewrite'::regclass and d.objid = r.oid
            and d.refclassid = 'pg_class'::regclass
         join pg_class t on t.oid = d.refobjid
         where n.nspname = 'public' and v.relkind in ('v', 'm') and t.oid <> v.oid",
    )
    .fetch_all(pool)
    .await
    .expect("reads the views");
    for (view, table) in views {
        if kinds.get(&table) == Some(&Kind::Tenant) && !relations.contains(&view) {
            relations.push(view);
        }
    }
    relations
}

/// A SQL or PL/pgSQL function of the schema.
#[derive(Debug, sqlx::FromRow)]
struct Function {
    name: String,
    /// As `regprocedure` prints it: what `create_distributed_function` takes.
    signature: String,
    /// Its input arguments' names and types.
    argument_names: Vec<String>,
    argument_types: Vec<String>,
    /// The tenant relations its body names.
    reads: Vec<String>,
}

impl Function {
    /// The argument it may be distributed by.
    fn tenant_argument(&self) -> Option<&str> {
        self.argument_names
            .iter()
            .zip(&self.argument_types)
            .find(|(name, kind)| TENANT_ARGUMENTS.contains(&name.as_str()) && *kind == "text")
            .map(|(name, _)| name.as_str())
    }
}

/// The functions of the schema (not an extension's), with the tenant
/// relations each names: as a whole word, in any case, anywhere in its
/// body (comments included: an allow-list entry is cheap).
async fn functions(pool: &PgPool, relations: &[String]) -> Vec<Function> {
    sqlx::query_as(
        r#"with f as (
             select p.oid, p.proname::text as name, p.oid::regprocedure::text as signature,
                    case when p.prosqlbody is not null then pg_get_functiondef(p.oid)
                         else p.prosrc end as body,
                    coalesce(p.proallargtypes, p.proargtypes::oid[]) as types,
                    coalesce(p.proargmodes, array_fill('i'::"char", array[p.pronargs::int])) as modes,
                    p.proargnames as names
             from pg_proc p
             join pg_namespace n on n.oid = p.pronamespace
             join pg_language l on l.oid = p.prolang
             where n.nspname = 'public' and l.lanname in ('sql', 'plpgsql')
               and p.prokind in ('f', 'p')
               and not exists (
                   select from pg_depend d
                   where d.classid = 'pg_proc'::regclass and d.objid = p.oid and d.deptype = 'e')
         )
         select f.name, f.signature,
                array(select coalesce(a.name, '') from unnest(f.types, f.modes, f.names)
                          with ordinality as a (type, mode, name, i)
                      where a.mode in ('i', 'b', 'v') order by a.i) as argument_names,
                array(select format_type(a.type, null) from unnest(f.types, f.modes, f.names)
                          with ordinality as a (type, mode, name, i)
                      where a.mode in ('i', 'b', 'v') order by a.i) as argument_types,
                array(select r.name from unnest($1::text[]) as r (name)
                      where f.body ~* ('\m' || r.name || '\M') order by r.name) as reads
         from f
         order by f.name, f.signature"#,
    )
    .bind(relations)
    .fetch_all(pool)
    .await
    .expect("reads the functions")
}

/// A primary key, unique index or exclusion constraint.
#[derive(Debug, sqlx::FromRow)]
struct UniqueIndex {
    name: String,
    table_name: String,
    is_primary: bool,
    is_exclusion: bool,
    /// None when it leads with an expression.
    first_column: Option<String>,
    definition: String,
}

/// A foreign key, with its columns in order on both sides.
#[derive(Debug, sqlx::FromRow)]
struct ForeignKey {
    name: String,
    table_name: String,
    target: String,
    columns: Vec<String>,
    target_columns: Vec<String>,
}

/// A column's default (or identity), and what the functions it calls are.
#[derive(Debug, sqlx::FromRow)]
struct ColumnDefault {
    table_name: String,
    column_name: String,
    expression: String,
    from_sequence: bool,
    mutable: bool,
}

/// Every way the schema behind `pool` breaks a rule of the module's doc,
/// each naming the object (`table x`, `index x on y`, `foreign key x on y`,
/// `column t.c`, `sequence s`, `function f(...)`, `allow-list: ...`).
pub async fn citus_violations(pool: &PgPool) -> Vec<String> {
    let mut violations = Vec::new();
    let (tables, kinds) = table_kinds(pool).await;
    let kind_of = |table: &str| kinds.get(table).copied().unwrap_or(Kind::Unclassified);

    // Every table is classified; a tenant table's key column fits.
    for table in &tables {
        match kind_of(&table.name) {
            Kind::Tenant => {
                if table.tenant_type.as_deref() != Some("text") {
                    violations.push(format!(
                        "table {}: tenant_id is {}, not text (co-location with {COLOCATION_ANCHOR} needs one type)",
                        table.name,
                        table.tenant_type.as_deref().unwrap_or("?")
                    ));
                }
                if table.tenant_not_null != Some(true) {
                    violations.push(format!(
                        "table {}: tenant_id may be null (Citus refuses a row without its distribution column)",
                        table.name
                    ));
                }
            }
            Kind::Unclassified => violations.push(format!(
                "table {}: no tenant_id, and on neither REFERENCE_TABLES nor COORDINATOR_TABLES",
                table.name
            )),
            Kind::Reference | Kind::Coordinator => {}
        }
    }

    // Uniqueness is enforced per shard: it must be led by the tenant.
    let unique: Vec<UniqueIndex> = sqlx::query_as(
        "select i.indexrelid::regclass::text as name, c.relname::text as table_name,
                i.indisprimary as is_primary, i.indisexclusion as is_exclusion,
                a.attname::text as first_column, pg_get_indexdef(i.indexrelid) as definition
         from pg_index i
         join pg_class c on c.oid = i.indrelid
         join pg_namespace n on n.oid = c.relnamespace
         left join pg_attribute a on a.attrelid = c.oid and a.attnum = i.indkey[0]
         where n.nspname = 'public' and (i.indisprimary or i.indisunique or i.indisexclusion)
         order by 1",
    )
    .fetch_all(pool)
    .await
    .expect("reads the unique indexes");
    for index in unique {
        if kind_of(&index.table_name) == Kind::Tenant
            && index.first_column.as_deref() != Some("tenant_id")
        {
            let what = if index.is_primary {
                "primary key"
            } else if index.is_exclusion {
                "exclusion constraint"
            } else {
                "unique index"
            };
            violations.push(format!(
                "index {} on {}: {what} not led by tenant_id: {}",
                index.name, index.table_name, index.definition
            ));
        }
    }

    // Foreign keys stay within a tenant, or reach a reference table.
    let foreign: Vec<ForeignKey> = sqlx::query_as(
        "select con.conname::text as name, c.relname::text as table_name,
                f.relname::text as target,
                array(select a.attname::text
                      from unnest(con.conkey) with ordinality as k (attnum, i)
                      join pg_attribute a on a.attrelid = con.conrelid and a.attnum = k.attnum
                      order by k.i) as columns,
                array(select a.attname::text
                      from unnest(con.confkey) with ordinality as k (attnum, i)
                      join pg_attribute a on a.attrelid = con.confrelid and a.attnum = k.attnum
                      order by k.i) as target_columns
         from pg_constraint con
         join pg_class c on c.oid = con.conrelid
         join pg_class f on f.oid = con.confrelid
         join pg_namespace n on n.oid = c.relnamespace
         where con.contype = 'f' and n.nspname = 'public'
         order by 1",
    )
    .fetch_all(pool)
    .await
    .expect("reads the foreign keys");
    for ForeignKey {
        name,
        table_name: table,
        target,
        columns,
        target_columns,
    } in foreign
    {
        let keys = format!(
            "({}) references {target} ({})",
            columns.join(", "),
            target_columns.join(", ")
        );
        let problem = match (kind_of(&table), kind_of(&target)) {
            (Kind::Tenant, Kind::Tenant) => {
                let by_tenant = columns
                    .iter()
                    .zip(&target_columns)
                    .any(|(a, b)| a == "tenant_id" && b == "tenant_id");
                (!by_tenant).then_some("without tenant_id at the same place on both sides")
            }
            (Kind::Tenant, Kind::Reference) | (Kind::Reference, Kind::Reference) => None,
            (Kind::Coordinator, Kind::Coordinator) => None,
            (Kind::Reference, Kind::Tenant) => {
                Some("from a reference table to a distributed one (Citus has no such key)")
            }
            _ => Some("between a coordinator table and a distributed or reference one"),
        };
        if let Some(problem) = problem {
            violations.push(format!("foreign key {name} on {table}: {keys} {problem}"));
        }
    }

    // Column defaults of the tenant tables: no sequences, nothing that
    // depends on the node that evaluates it, unless listed.
    let defaults: Vec<ColumnDefault> = sqlx::query_as(
        r"select c.relname::text as table_name, a.attname::text as column_name,
                 coalesce(pg_get_expr(d.adbin, d.adrelid), 'generated ' ||
                     case a.attidentity when 'a' then 'always' else 'by default' end
                     || ' as identity') as expression,
                 a.attidentity <> '' or coalesce(f.from_sequence, false) as from_sequence,
                 coalesce(f.mutable, false) as mutable
          from pg_attribute a
          join pg_class c on c.oid = a.attrelid
          join pg_namespace n on n.oid = c.relnamespace
          left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
          -- The functions the expression calls, by their oids in its tree.
          left join lateral (
              select bool_or(p.oid = 'pg_catalog.nextval(regclass)'::regprocedure)
                         as from_sequence,
                     bool_or(p.provolatile <> 'i'
                         and p.oid <> 'pg_catalog.nextval(regclass)'::regprocedure) as mutable
              from regexp_matches(d.adbin::text, ':(?:func|opfunc)id (\d+)', 'g') as m (f)
              join pg_proc p on p.oid = m.f[1]::oid
          ) f on true
          where n.nspname = 'public' and c.relkind in ('r', 'p') and a.attnum > 0
            and not a.attisdropped and (d.oid is not null or a.attidentity <> '')
          order by 1, 2",
    )
    .fetch_all(pool)
    .await
    .expect("reads the column defaults");
    for ColumnDefault {
        table_name: table,
        column_name: column,
        expression: default,
        from_sequence,
        mutable,
    } in defaults
    {
        if kind_of(&table) != Kind::Tenant {
            continue;
        }
        let listed = |list: &[(&str, &str, &str)]| {
            list.iter()
                .any(|(t, c, _)| *t == table.as_str() && *c == column.as_str())
        };
        if from_sequence && !listed(SEQUENCE_DEFAULTS) {
            violations.push(format!(
                "column {table}.{column}: default from a sequence, not on SEQUENCE_DEFAULTS: {default}"
            ));
        }
        if mutable && !listed(NODE_DEFAULTS) {
            violations.push(format!(
                "column {table}.{column}: default calls a function that is not immutable, \
                 not on NODE_DEFAULTS: {default}"
            ));
        }
    }

    // Every sequence is accounted for.
    let sequences: Vec<String> = sqlx::query_scalar(
        "select c.relname::text from pg_class c
         join pg_namespace n on n.oid = c.relnamespace
         where n.nspname = 'public' and c.relkind = 'S' order by 1",
    )
    .fetch_all(pool)
    .await
    .expect("reads the sequences");
    for sequence in &sequences {
        if !SEQUENCES.iter().any(|(name, _)| name == sequence) {
            violations.push(format!("sequence {sequence}: not on SEQUENCES"));
        }
    }

    // A function that reads tenant tables takes the tenant.
    let relations = tenant_relations(pool, &kinds).await;
    let functions = functions(pool, &relations).await;
    for function in &functions {
        if function.reads.is_empty() || function.tenant_argument().is_some() {
            continue;
        }
        if FUNCTIONS_WITHOUT_TENANT
            .iter()
            .any(|(name, _)| *name == function.name)
        {
            continue;
        }
        violations.push(format!(
            "function {}: reads {} without a tenant argument (text, named one of {})",
            function.signature,
            function.reads.join(", "),
            TENANT_ARGUMENTS.join(", ")
        ));
    }

    // The allow-lists name what exists.
    let function_names: BTreeSet<&str> = functions.iter().map(|f| f.name.as_str()).collect();
    let stale = REFERENCE_TABLES
        .iter()
        .chain(COORDINATOR_TABLES)
        .filter(|(name, _)| !kinds.contains_key(*name))
        .map(|(name, _)| format!("table {name}"))
        .chain(
            SEQUENCES
                .iter()
                .filter(|(name, _)| !sequences.iter().any(|s| s == name))
                .map(|(name, _)| format!("sequence {name}")),
        )
        .chain(
            SEQUENCE_DEFAULTS
                .iter()
                .chain(NODE_DEFAULTS)
                .filter(|(table, _, _)| kind_of(table) != Kind::Tenant)
                .map(|(table, column, _)| format!("column {table}.{column}")),
        )
        .chain(
            FUNCTIONS_WITHOUT_TENANT
                .iter()
                .chain(COORDINATOR_FUNCTIONS)
                .filter(|(name, _)| !function_names.contains(name))
                .map(|(name, _)| format!("function {name}")),
        );
    for entry in stale {
        violations.push(format!("allow-list: {entry} names nothing in the schema"));
    }
    violations
}

/// The schema the migrations leave keeps every rule.
#[tokio::test]
async fn the_migrated_schema_can_be_distributed_by_tenant() {
    let app = spawn_app().await;
    let violations = citus_violations(&app.pool).await;
    assert!(
        violations.is_empty(),
        "the schema breaks rules of Citus (see tests/api/citus.rs and docs/scale-out.md):\n{}",
        violations.join("\n")
    );
}

/// A future migration, as careless as can be: every rule broken once.
const BROKEN_MIGRATION: &str = r"
-- A table of tags: a serial id as its key, a nullable tenant, a foreign
-- key to a note by its id alone (which needs a unique index on notes.id
-- alone), and a default that depends on the clock of the node.
create unique index notes_id on notes (id);
create table note_tags (
    id         bigserial   primary key,
    tenant_id  text,
    note_id    uuid        not null references notes (id),
    tag        text        not null,
    created_at timestamptz not null default now()
);
-- A tenant table whose tenant is not text.
create table note_flags (
    tenant_id varchar(64) not null,
    note_id   uuid        not null,
    primary key (tenant_id, note_id)
);
-- A global table nobody classified.
create table tag_colors (
    tag   text primary key,
    color text not null
);
-- A count across tenants, in a function that takes no tenant.
create function notesd_count_notes() returns bigint
language sql stable
as $$ select count(*) from notes $$;
";

/// A migration that breaks the rules, applied after the real ones in a
/// database of its own, is caught: each broken rule by its object's name,
/// and nothing else.
#[tokio::test]
async fn a_migration_that_breaks_a_rule_is_caught() {
    let app = spawn_app().await;
    assert!(
        citus_violations(&app.pool).await.is_empty(),
        "a clean schema first"
    );

    // The real migrations (applied already, by notesd) and one more, as
    // sqlx would find it in migrations/.
    let mut migrator = sqlx::migrate!("./migrations");
    let next = migrator.iter().map(|m| m.version).max().unwrap_or(0) + 1;
    migrator.migrations.to_mut().push(Migration::new(
        next,
        "breaks citus".into(),
        MigrationType::Simple,
        BROKEN_MIGRATION.into(),
        false,
    ));
    migrator
        .run(&app.pool)
        .await
        .expect("the broken migration applies");

    let violations = citus_violations(&app.pool).await;
    let expected = [
        "index notes_id on notes: unique index not led by tenant_id",
        "index note_tags_pkey on note_tags: primary key not led by tenant_id",
        "table note_tags: tenant_id may be null",
        "foreign key note_tags_note_id_fkey on note_tags: (note_id) references notes (id) without tenant_id",
        "column note_tags.id: default from a sequence",
        "column note_tags.created_at: default calls a function that is not immutable",
        "sequence note_tags_id_seq: not on SEQUENCES",
        "table note_flags: tenant_id is character varying(64), not text",
        "table tag_colors: no tenant_id",
        "function notesd_count_notes(): reads notes without a tenant argument",
    ];
    for expected in expected {
        assert!(
            violations.iter().any(|v| v.starts_with(expected)),
            "not reported: {expected}\nreported:\n{}",
            violations.join("\n")
        );
    }
    assert_eq!(
        violations.len(),
        expected.len(),
        "reported more than the broken migration broke:\n{}",
        violations.join("\n")
    );
}

/// docs/scale-out.md's DDL distributes every tenant table (co-located with
/// notes), makes every reference table one, distributes every function
/// that takes the tenant by it, and names every allow-list entry: a new
/// table or function fails here until the runbook has it.
#[tokio::test]
async fn the_runbook_distributes_every_table_and_function() {
    let runbook =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/scale-out.md"))
            .expect("docs/scale-out.md exists");
    let app = spawn_app().await;
    let (_, kinds) = table_kinds(&app.pool).await;
    let relations = tenant_relations(&app.pool, &kinds).await;
    let mut missing = Vec::new();
    let mut expect = |text: String| {
        if !runbook.contains(&text) {
            missing.push(text);
        }
    };
    for (table, kind) in &kinds {
        match kind {
            Kind::Tenant if table == COLOCATION_ANCHOR => expect(format!(
                "select create_distributed_table('{table}', 'tenant_id', colocate_with => 'none');"
            )),
            Kind::Tenant => expect(format!(
                "select create_distributed_table('{table}', 'tenant_id', colocate_with => '{COLOCATION_ANCHOR}');"
            )),
            Kind::Reference => expect(format!("select create_reference_table('{table}');")),
            Kind::Coordinator | Kind::Unclassified => expect(format!("`{table}`")),
        }
    }
    for function in functions(&app.pool, &relations).await {
        let on_coordinator = COORDINATOR_FUNCTIONS
            .iter()
            .any(|(name, _)| *name == function.name);
        match function.tenant_argument() {
            Some(argument) if !function.reads.is_empty() && !on_coordinator => expect(format!(
                "select create_distributed_function('{}', '{argument}', colocate_with => '{COLOCATION_ANCHOR}');",
                function.signature
            )),
            _ => expect(format!("`{}`", function.name)),
        }
    }
    for name in SEQUENCES
        .iter()
        .chain(FUNCTIONS_WITHOUT_TENANT)
        .chain(COORDINATOR_FUNCTIONS)
        .map(|(name, _)| name.to_string())
        .chain(
            SEQUENCE_DEFAULTS
                .iter()
                .chain(NODE_DEFAULTS)
                .map(|(table, column, _)| format!("{table}.{column}")),
        )
    {
        expect(format!("`{name}`"));
    }
    assert!(
        missing.is_empty(),
        "docs/scale-out.md lacks:\n{}",
        missing.join("\n")
    );
}
