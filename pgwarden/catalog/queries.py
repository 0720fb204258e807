"""The SQL that reads the catalog facts, one query per kind of fact.

Each query names its columns after the fields of the fact it fills (`COLUMNS`),
so the loader can check that the server answered what it expects instead of
trusting positions. All of them run in one REPEATABLE READ, READ ONLY
transaction with ``search_path = pg_catalog, pg_temp`` (`TRANSACTION`), so the
facts are one consistent picture and no object of a user's schema can stand in
for a catalog table, function or operator used here.

The queries are written once for PostgreSQL 11 and later; `for_version` adjusts
the few expressions that depend on the release (SQL-standard function bodies
exist from 14).
"""

from __future__ import annotations

from pgwarden.catalog.model import FIRST_NORMAL_OID

# The oldest release the queries are written for: pg_proc.prokind appeared in 11.
OLDEST_SERVER_VERSION = 110000

#: What starts the transaction the queries run in, after BEGIN (given by the client).
TRANSACTION = (
    "SET LOCAL search_path = pg_catalog, pg_temp",
    # The regular expressions below are written for it (a server may have it off).
    "SET LOCAL standard_conforming_strings = on",
    # A load must end: a stuck catalog query would keep the previous facts forever.
    "SET LOCAL statement_timeout = {timeout_ms}",
    # The planner's estimates for the regular expressions over stored trees (EFFECTS) cross
    # jit_above_cost: compiling the query took ~125 ms of a load whose query runs in ~1 ms.
    "SET LOCAL jit = off",
)

VERSION = "SELECT pg_catalog.current_setting('server_version_num')::int4"

COLUMNS: dict[str, tuple[str, ...]] = {
    "functions": (
        "oid", "schema", "name", "nargs", "ndefaults", "variadic", "volatility", "language",
        "trusted_language", "kind", "builtin", "public_execute", "security_definer", "returns_set",
        "source", "extension", "config", "sql_body", "result_type", "result_relation", "result_columns",
        "argument_names",
    ),
    "relations": ("oid", "schema", "name", "kind"),
    # One row per relation or composite type: its columns' names and types by attnum ("" and 0
    # for a dropped column: attnums stay right).
    "attributes": ("relation", "names", "types"),
    # A view's or materialized view's query as text (pg_get_viewdef), for lineage.
    "definitions": ("relation", "definition"),
    # One row per (relation, type of one of its columns) for the types initdb did not pin.
    "column_types": ("relation", "type"),
    # One row per (view, function or relation it depends on): kind 'f' for pg_proc, 'r' for pg_class.
    "dependencies": ("relation", "kind", "target"),
    # One row per (relation, what a write or a read of it runs that the statement does not name):
    # kind 't' a trigger's function, 'd' a function a column's default or generated expression
    # calls, 'p' a function a row-level security policy calls (its table has RLS on), 'c' a table
    # a foreign key's ON DELETE / ON UPDATE action writes ('r': another referencing table, which
    # only TRUNCATE ... CASCADE empties; 'n' / 'u' one whose rows an ON DELETE / ON UPDATE action
    # updates: SET NULL, SET DEFAULT, ON UPDATE CASCADE), 'i' a partition or inheritance child,
    # 'k' a column of a partitioned table's key (target: its attnum, 0 for an expression);
    # 'o' (of a TOAST relation) the table whose values stored out of line it holds;
    # target: pg_proc or pg_class OID.
    "effects": ("relation", "kind", "target"),
    # One row per rule that rewrites a write (ON INSERT / UPDATE / DELETE: not a view's SELECT
    # rule), its CREATE RULE text (pg_get_ruledef, names schema-qualified).
    "rules": ("relation", "definition"),
    # One row per expression of a row-level security policy (USING, WITH CHECK) of a table with
    # row-level security on, as pg_get_expr prints it (names outside pg_catalog schema-qualified).
    "policies": ("relation", "expression"),
    # One row per (aggregate made after initdb, a function it runs: transition, final, combine,
    # (de)serialization, moving-aggregate ones).
    "aggregates": ("aggregate", "function"),
    "operators": ("oid", "schema", "name", "function", "left", "right"),
    "types": ("oid", "schema", "name", "kind", "functions", "parts"),
    "casts": ("oid", "source", "target", "function", "context", "method"),
    "settings": ("name", "context"),
    # The planner's settings: pg_settings' category "Query Tuning / ..." (enable_seqscan,
    # random_page_cost, ...), which decide which plan, and so which row order, a statement gets.
    "tuning": ("name",),
    "schemas": ("name",),
    # The server's keywords (pg_get_keywords): SQL syntax pgwarden's parser, of a newer release,
    # reads where the server reads a function call (`json_value(...)` before PostgreSQL 17).
    "keywords": ("word",),
    # What a new session of the upstream role in this database starts with, where the role or the
    # database sets it (ALTER ROLE / DATABASE ... SET search_path), else the server's default.
    "session": ("name", "value"),
    # The functions of the event triggers that are enabled: DDL runs them (red team eleven).
    "event_triggers": ("function",),
    # One row per (operator class, a function of the database's own its family runs: a support
    # function, an operator's function): an index built with it runs them (red team eleven).
    "operator_classes": ("schema", "name", "function"),
    # The settings a role without pg_read_all_settings sees in pg_settings, read as
    # pg_database_owner (`PLAIN_SETTINGS`): those of "settings" it does not see (GUC_SUPERUSER_ONLY:
    # hba_file, data_directory, primary_conninfo, ...) answer SHOW only to the privileged, as the
    # upstream role may be (red team twelve). Empty: not known.
    "plain_settings": ("name",),
    # One row per index: its schema and name, and its table (pg_class OID). DROP INDEX, ALTER
    # INDEX, REINDEX INDEX name the index, not its table: a rule naming the table sees them by it
    # (red team twelve).
    "indexes": ("schema", "name", "relation"),
    # The extensions every version of which is trusted (pg_available_extension_versions): a role
    # with CREATE on the database may install them; any other is a superuser's (red team thirteen:
    # `CREATE EXTENSION adminpack`, whose functions write server files, passed as DDL).
    "trusted_extensions": ("name",),
}

# EXECUTE for PUBLIC by the function's initial privileges: those pg_init_privs keeps for objects
# of initdb ('i') and of extension scripts ('e'), else the current ones. A NULL ACL is the default,
# under which PUBLIC may execute a function; otherwise PUBLIC (grantee 0) needs an EXECUTE item.
_PUBLIC_EXECUTE = """
    CASE WHEN coalesce(i.initprivs, p.proacl) IS NULL THEN true
         ELSE EXISTS (SELECT FROM aclexplode(coalesce(i.initprivs, p.proacl)) AS a
                      WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE')
    END"""

# A function's arguments with their modes: (name, mode, i); a NULL proargmodes means all IN.
# (Braces doubled: the functions query is formatted once more by `for_version`.)
_ARGUMENTS = """unnest(coalesce(p.proargnames, '{{}}'::text[]),
                       coalesce(p.proargmodes, '{{}}'::"char"[])) WITH ORDINALITY AS a(name, mode, i)"""

_FUNCTIONS = f"""
SELECT p.oid::int8 AS oid, n.nspname AS schema, p.proname AS name,
       p.pronargs AS nargs, p.pronargdefaults AS ndefaults, p.provariadic <> 0 AS variadic,
       p.provolatile AS volatility, l.lanname AS language, l.lanpltrusted AS trusted_language,
       p.prokind AS kind,
       (p.oid < {FIRST_NORMAL_OID} OR x.extname IS NOT NULL) AS builtin,
       {_PUBLIC_EXECUTE} AS public_execute,
       p.prosecdef AS security_definer, p.proretset AS returns_set,
       CASE WHEN l.lanname NOT IN ('sql', 'plpgsql') THEN NULL
            {{body}}
            ELSE p.prosrc END AS source,
       x.extname AS extension, p.proconfig AS config,
       {{sql_body}} AS sql_body,
       p.prorettype::int8 AS result_type,
       -- the row type's relation; a domain's by its base type (a domain over a composite type
       -- returns the composite's columns; domains over domains followed, the server allows it)
       coalesce((WITH RECURSIVE base (typrelid, typbasetype, typtype, depth) AS (
                     SELECT t.typrelid, t.typbasetype, t.typtype, 0 FROM pg_type AS t WHERE t.oid = p.prorettype
                     UNION ALL
                     SELECT b.typrelid, b.typbasetype, b.typtype, base.depth + 1
                     FROM pg_type AS b JOIN base ON b.oid = base.typbasetype
                     WHERE base.typtype = 'd' AND base.depth < 16)
                 SELECT base.typrelid::int8 FROM base WHERE base.typtype <> 'd'), 0) AS result_relation,
       ARRAY(SELECT coalesce(a.name, '') FROM {_ARGUMENTS} WHERE a.mode IN ('o', 'b', 't')
             ORDER BY a.i) AS result_columns,
       ARRAY(SELECT coalesce(a.name, '') FROM {_ARGUMENTS} WHERE coalesce(a.mode, 'i') IN ('i', 'b', 'v')
             ORDER BY a.i) AS argument_names
FROM pg_proc AS p
JOIN pg_namespace AS n ON n.oid = p.pronamespace
JOIN pg_language AS l ON l.oid = p.prolang
LEFT JOIN pg_init_privs AS i
       ON i.objoid = p.oid AND i.classoid = 'pg_proc'::regclass AND i.objsubid = 0
LEFT JOIN pg_depend AS d
       ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.objsubid = 0
      AND d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
LEFT JOIN pg_extension AS x ON x.oid = d.refobjid
WHERE {{part}}
ORDER BY p.oid"""

RELATIONS = """
SELECT c.oid::int8 AS oid, n.nspname AS schema, c.relname AS name, c.relkind AS kind
FROM pg_class AS c
JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S', 't')
ORDER BY c.oid"""

# The columns of every relation and composite type, for lineage: what ``*`` expands to, what a
# RowDescription's (table OID, attnum) names. One row per relation, its columns' names and types
# in attnum order (attnums start at 1 and have no gaps: a dropped column keeps its place, with the
# name "" — no column can be named so — and type 0). One row per relation, not per column: a
# database of 100,000 tables has a million columns.
_ATTRIBUTES = """
SELECT a.attrelid::int8 AS relation,
       array_agg(CASE WHEN a.attisdropped THEN '' ELSE a.attname::text END ORDER BY a.attnum) AS names,
       array_agg(CASE WHEN a.attisdropped THEN 0 ELSE a.atttypid::int8 END ORDER BY a.attnum) AS types
FROM pg_attribute AS a
JOIN pg_class AS c ON c.oid = a.attrelid AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'c', 'S', 't')
WHERE a.attnum > 0 AND {part}
GROUP BY a.attrelid
ORDER BY 1"""
ATTRIBUTES = _ATTRIBUTES.format(part="true")

# A view's query as text, for lineage. Printed under this transaction's search_path (pg_catalog,
# pg_temp), so every relation outside pg_catalog comes schema-qualified. Asked only for the
# views whose rule changed since the last load, like their dependencies (`VIEW_RULES`).
DEFINITIONS = """
SELECT c.oid::int8 AS relation, pg_get_viewdef(c.oid) AS definition
FROM pg_class AS c
WHERE c.relkind IN ('v', 'm') AND c.oid = ANY(%(views)s::oid[])
ORDER BY 1"""

# The types of the relations' columns that a write converts values to, where that may run a
# function of the database's own: a domain's CHECK, an assignment cast, a type's input function.
# Read from pg_depend (a column records a dependency on its type; through its index on the
# referenced object), which leaves out the types initdb pinned (int4, text, ...): those run only
# built-in functions, and pinned objects have no dependencies recorded.
COLUMN_TYPES = """
SELECT DISTINCT d.objid::int8 AS relation, d.refobjid::int8 AS type
FROM pg_depend AS d
JOIN pg_class AS c ON c.oid = d.objid AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
WHERE d.refclassid = 'pg_type'::regclass AND d.classid = 'pg_class'::regclass AND d.objsubid > 0
  AND d.deptype = 'n'
ORDER BY 1, 2"""

# (AGGREGATES: below _TREE_REFS, whose fields it reads)

RULES = """
SELECT r.ev_class::int8 AS relation, pg_get_ruledef(r.oid) AS definition
FROM pg_rewrite AS r
WHERE r.ev_type <> '1'
ORDER BY 1, 2"""

# The expressions of the row-level security policies of tables with row-level security on: the
# server adds them to every statement reading (USING) or writing (WITH CHECK) the table, under the
# statement's eyes, so their conditions are the statement's (lineage walks them: a policy whose
# subquery reads a view later replaced to return the SSN filtered the agent's own rows by it, red
# team eight). Printed under this transaction's search_path, like the views' definitions.
POLICIES = """
SELECT e.relation, e.expression FROM (
    SELECT p.polrelid::int8 AS relation, pg_get_expr(p.polqual, p.polrelid) AS expression
    FROM pg_policy AS p JOIN pg_class AS c ON c.oid = p.polrelid AND c.relrowsecurity
    WHERE p.polqual IS NOT NULL
    UNION ALL
    SELECT p.polrelid::int8, pg_get_expr(p.polwithcheck, p.polrelid)
    FROM pg_policy AS p JOIN pg_class AS c ON c.oid = p.polrelid AND c.relrowsecurity
    WHERE p.polwithcheck IS NOT NULL
) AS e
ORDER BY 1, 2"""

# What reading each view and materialized view calls and reads, from its SELECT rule's query tree
# (pg_rewrite.ev_action), not from pg_depend: PostgreSQL records no dependency on a pinned object
# (one initdb made, below FirstUnpinnedObjectId), so pg_depend would not show a view calling
# pg_read_file or reading pg_class. The tree names every function it runs by OID: FuncExpr
# (funcid), Aggref (aggfnoid), WindowFunc (winfnoid), operators (opfuncid of OpExpr and
# ScalarArrayOpExpr, with their hash and negator functions), tablesample handlers, RANGE window
# frames' in-range functions; and operators by OID only (opno, sort and equality operators of
# ORDER BY / GROUP BY / DISTINCT, the opnos list of a row comparison), which run their oprcode.
# Relations are the relid of its range table entries, less the view itself (its OLD and NEW).
# pg_depend adds what the tree holds only as a constant, e.g. the sequence of nextval('s').
# Strings in a tree are written with their spaces escaped, so a name cannot forge a field.
# The view's other rules (ON INSERT/UPDATE/DELETE DO INSTEAD ...) run on writes, not on reading.
_FUNCTION_FIELDS = (
    "funcid", "opfuncid", "hashfuncid", "negfuncid", "aggfnoid", "winfnoid", "tsmhandler",
    "startInRangeFunc", "endInRangeFunc",
)
_OPERATOR_FIELDS = ("opno", "eqop", "sortop")
_OPERATORS = ", ".join(f"'{field}'" for field in _OPERATOR_FIELDS)
# The references to functions and operators in a stored expression tree (pg_node_tree as text):
# m[1] the field, m[2] the OID.
_TREE_REFS = ":({fields}) (\\d+)".format(fields="|".join(_FUNCTION_FIELDS + _OPERATOR_FIELDS))
# The stored expression trees a table's rows go through (see EFFECTS): relation, kind, tree: a
# table's CHECK constraints, defaults, partition key, its columns' domains' defaults ('d'), its
# indexes' expressions and predicates ('x'), its triggers' WHEN conditions ('t').
_STORED_TREES = """(
        SELECT k.conrelid AS relation, 'd' AS kind, k.conbin::text AS tree
        FROM pg_constraint AS k WHERE k.conrelid <> 0 AND k.contype = 'c'
        UNION ALL
        SELECT a.adrelid, 'd', a.adbin::text FROM pg_attrdef AS a
        UNION ALL
        SELECT p.partrelid, 'd', p.partexprs::text FROM pg_partitioned_table AS p WHERE p.partexprs IS NOT NULL
        UNION ALL
        SELECT i.indrelid, 'x', i.indexprs::text FROM pg_index AS i WHERE i.indexprs IS NOT NULL
        UNION ALL
        SELECT i.indrelid, 'x', i.indpred::text FROM pg_index AS i WHERE i.indpred IS NOT NULL
        UNION ALL
        SELECT a.attrelid, 'd', t.typdefaultbin::text
        FROM pg_attribute AS a JOIN pg_type AS t ON t.oid = a.atttypid
        WHERE t.typtype = 'd' AND t.typdefaultbin IS NOT NULL AND a.attnum > 0 AND NOT a.attisdropped
        UNION ALL
        SELECT g.tgrelid, 't', g.tgqual::text
        FROM pg_trigger AS g WHERE g.tgqual IS NOT NULL AND NOT g.tgisinternal{statistics}
    )"""
# Extended statistics' expressions (PostgreSQL 14 on), computed by ANALYZE.
_STATISTICS_TREES = """
        UNION ALL
        SELECT s.stxrelid, 'x', s.stxexprs::text FROM pg_statistic_ext AS s WHERE s.stxexprs IS NOT NULL"""

# What calling a function of the database's own (an extension's too) runs besides its body: an
# aggregate made after initdb, its transition, final, combine, (de)serialization and moving-aggregate
# functions; any function or procedure, the functions (and operators' functions) its arguments'
# DEFAULT expressions call, which the caller computes for the arguments it leaves out (red team
# fifteen: `CALL p()` of a procedure whose body does nothing, `a int DEFAULT public.wipe()`, emptied
# secret.things under a rule naming it), and the functions of the CHECK constraints of the domains
# its arguments and its result are of (over a domain, its base domains' too): every call converts
# its arguments, and its result, to them (red team fifteen: `SELECT f(5)` of an IMMUTABLE
# `f(c public.checked)`, a domain whose CHECK deletes, emptied public.things under the agents'
# policy). Each counted as the call's (`FunctionFacts.support`).
AGGREGATES = f"""
WITH RECURSIVE typed(routine, type) AS (
    SELECT p.oid, a.type
    FROM pg_proc AS p, unnest(p.proargtypes::oid[] || p.prorettype) AS a(type)
    WHERE p.oid >= {FIRST_NORMAL_OID}
    UNION
    SELECT typed.routine, t.typbasetype
    FROM typed JOIN pg_type AS t ON t.oid = typed.type AND t.typtype = 'd'
), domain_checks AS (
    SELECT typed.routine, k.conbin::text AS tree
    FROM typed JOIN pg_constraint AS k ON k.contypid = typed.type AND k.contype = 'c'
)
SELECT DISTINCT a.aggfnoid::int8 AS aggregate, f.oid::int8 AS function
FROM pg_aggregate AS a
CROSS JOIN LATERAL unnest(ARRAY[a.aggtransfn::oid, a.aggfinalfn::oid, a.aggcombinefn::oid, a.aggserialfn::oid,
                                a.aggdeserialfn::oid, a.aggmtransfn::oid, a.aggminvtransfn::oid,
                                a.aggmfinalfn::oid]) AS f(oid)
WHERE a.aggfnoid >= {FIRST_NORMAL_OID} AND f.oid <> 0
UNION
SELECT refs.routine::int8,
       CASE WHEN refs.field IN ({_OPERATORS}) THEN o.oprcode::oid ELSE refs.ref END::int8
FROM (
    SELECT p.oid AS routine, m[1] AS field, m[2]::oid AS ref
    FROM pg_proc AS p, regexp_matches(p.proargdefaults::text, '{_TREE_REFS}', 'g') AS m
    WHERE p.proargdefaults IS NOT NULL AND p.oid >= {FIRST_NORMAL_OID}
    UNION ALL
    SELECT p.oid, 'opno', n::oid
    FROM pg_proc AS p, regexp_matches(p.proargdefaults::text, ':opnos \\(o((?: \\d+)+)\\)', 'g') AS m,
         regexp_split_to_table(btrim(m[1]), ' ') AS n
    WHERE p.proargdefaults IS NOT NULL AND p.oid >= {FIRST_NORMAL_OID}
    UNION ALL
    SELECT c.routine, m[1], m[2]::oid
    FROM domain_checks AS c, regexp_matches(c.tree, '{_TREE_REFS}', 'g') AS m
    UNION ALL
    SELECT c.routine, 'opno', n::oid
    FROM domain_checks AS c, regexp_matches(c.tree, ':opnos \\(o((?: \\d+)+)\\)', 'g') AS m,
         regexp_split_to_table(btrim(m[1]), ' ') AS n
) AS refs
LEFT JOIN pg_operator AS o ON refs.field IN ({_OPERATORS}) AND o.oid = refs.ref
WHERE refs.ref <> 0 AND (refs.field NOT IN ({_OPERATORS}) OR o.oprcode <> 0)
ORDER BY 1, 2"""

# The functions of the database's own in each type's default operator classes (support functions,
# operators' functions): sorting, grouping, DISTINCT, a merge or hash join, a UNION of values of the
# type run them, named by no statement (red team twelve: ORDER BY a column of an enum whose default
# btree class compares by a function that deleted rows). A type's (`_TYPES`: a value converted to it
# may be sorted) and a table's with a column of it, of an array or a domain over it, or of a
# composite type with a field of it (`_EFFECTS`, 'x': a record compares field by field). A range
# type's SUBTYPE_DIFF function and its subtype's operator class's (SUBTYPE_OPCLASS) likewise: a GiST
# index of the range type, and the planner's estimates, call the first; every range built or compared
# the second (red team fifteen: an INSERT into a table with a GiST index on a column of a range type
# whose subtype_diff, declared IMMUTABLE, deleted secret.things).
_DEFAULT_CLASSES = f"""
    SELECT c.opcintype AS type, p.amproc::oid AS function
    FROM pg_opclass AS c JOIN pg_amproc AS p ON p.amprocfamily = c.opcfamily
    WHERE c.opcdefault AND p.amproc::oid >= {FIRST_NORMAL_OID}
    UNION ALL
    SELECT c.opcintype, o.oprcode::oid
    FROM pg_opclass AS c
    JOIN pg_amop AS a ON a.amopfamily = c.opcfamily
    JOIN pg_operator AS o ON o.oid = a.amopopr
    WHERE c.opcdefault AND o.oprcode::oid >= {FIRST_NORMAL_OID}
    UNION ALL
    SELECT r.rngtypid, r.rngsubdiff::oid FROM pg_range AS r WHERE r.rngsubdiff::oid >= {FIRST_NORMAL_OID}
    UNION ALL
    SELECT r.rngtypid, p.amproc::oid
    FROM pg_range AS r
    JOIN pg_opclass AS c ON c.oid = r.rngsubopc
    JOIN pg_amproc AS p ON p.amprocfamily = c.opcfamily
    WHERE p.amproc::oid >= {FIRST_NORMAL_OID}"""

# What a statement runs without naming it, from the server's own records: triggers (less the
# internal ones of foreign keys, which run the built-in RI_FKey functions: their effect is the
# 'c' rows; a DEFERRABLE one has a 'T' row too: it may run at the commit, after the statement),
# the functions column defaults and RLS policies call (pg_depend: a default or a
# policy records a dependency on each function of the database's own it calls; built-ins are
# pinned and not recorded), the tables a foreign key's cascading action writes, and a table's
# partitions and inheritance children (pg_inherits: what reads and writes of it reach). And what
# a row stored runs besides its defaults, read from the stored expression trees as the views'
# are (pg_depend records no call of a pinned function: `CHECK (pg_terminate_backend(1) OR true)`):
# the table's CHECK constraints, its partition key's expressions and its defaults ('d'), its
# indexes' expressions and predicates ('x': also run by ANALYZE, REINDEX, VACUUM FULL, CLUSTER).
# A foreign table of file_fdw (whatever its wrapper's name: by its handler) reads a server file
# ('F') or runs a program ('X', its `program` option) whenever it is read.
_EFFECTS = f"""
SELECT DISTINCT * FROM (
    SELECT t.tgrelid::int8 AS relation, 't' AS kind, t.tgfoid::int8 AS target
    FROM pg_trigger AS t
    WHERE NOT t.tgisinternal
    UNION ALL
    SELECT t.tgrelid::int8, 'T', t.tgfoid::int8
    FROM pg_trigger AS t
    WHERE NOT t.tgisinternal AND t.tgdeferrable
    UNION ALL
    -- a row trigger on INSERT or UPDATE whose returned row is the one stored ('B': BEFORE) or the
    -- one RETURNING shows ('J': INSTEAD OF); tgtype's bits: ROW 1, BEFORE 2, INSERT 4, UPDATE 16,
    -- INSTEAD 64
    SELECT t.tgrelid::int8, CASE WHEN t.tgtype::int & 64 <> 0 THEN 'J' ELSE 'B' END, t.tgfoid::int8
    FROM pg_trigger AS t
    WHERE NOT t.tgisinternal AND t.tgtype::int & 1 <> 0 AND t.tgtype::int & 66 <> 0 AND t.tgtype::int & 20 <> 0
    UNION ALL
    -- the events each trigger fires on ('I' INSERT, 'U' UPDATE, 'D' DELETE, 'Y' TRUNCATE; tgtype's
    -- bits 4, 16, 8, 32): a write of another event does not run it
    SELECT t.tgrelid::int8, e.kind, t.tgfoid::int8
    FROM pg_trigger AS t
    JOIN (VALUES (4, 'I'), (16, 'U'), (8, 'D'), (32, 'Y')) AS e(bit, kind) ON t.tgtype::int & e.bit <> 0
    WHERE NOT t.tgisinternal
    UNION ALL
    SELECT a.adrelid::int8, 'd', d.refobjid::int8
    FROM pg_attrdef AS a
    JOIN pg_depend AS d ON d.classid = 'pg_attrdef'::regclass AND d.objid = a.oid
                       AND d.refclassid = 'pg_proc'::regclass
    UNION ALL
    SELECT p.polrelid::int8, 'p', d.refobjid::int8
    FROM pg_policy AS p
    JOIN pg_class AS c ON c.oid = p.polrelid AND c.relrowsecurity
    JOIN pg_depend AS d ON d.classid = 'pg_policy'::regclass AND d.objid = p.oid
                       AND d.refclassid = 'pg_proc'::regclass
    UNION ALL
    SELECT k.confrelid::int8,
           CASE WHEN k.confdeltype IN ('c', 'n', 'd') OR k.confupdtype IN ('c', 'n', 'd') THEN 'c' ELSE 'r' END,
           k.conrelid::int8
    FROM pg_constraint AS k
    WHERE k.contype = 'f'
    UNION ALL
    -- the referencing rows an action UPDATEs: ON DELETE SET NULL / SET DEFAULT ('n'), ON UPDATE
    -- CASCADE / SET NULL / SET DEFAULT ('u'); ON DELETE CASCADE deletes them (the 'c' row)
    SELECT k.confrelid::int8, 'n', k.conrelid::int8
    FROM pg_constraint AS k
    WHERE k.contype = 'f' AND k.confdeltype IN ('n', 'd')
    UNION ALL
    SELECT k.confrelid::int8, 'u', k.conrelid::int8
    FROM pg_constraint AS k
    WHERE k.contype = 'f' AND k.confupdtype IN ('c', 'n', 'd')
    UNION ALL
    -- a partitioned table's key columns (attnums; 0 for an expression): an UPDATE setting one moves rows
    SELECT p.partrelid::int8, 'k', a.attnum::int8
    FROM pg_partitioned_table AS p, unnest(p.partattrs::int2[]) AS a(attnum)
    UNION ALL
    SELECT i.inhparent::int8, 'i', i.inhrelid::int8
    FROM pg_inherits AS i
    JOIN pg_class AS c ON c.oid = i.inhrelid AND c.relkind IN ('r', 'p', 'f')
    UNION ALL
    -- a TOAST relation's owner: its chunks are the owner's values stored out of line
    SELECT c.reltoastrelid::int8, 'o', c.oid::int8
    FROM pg_class AS c
    WHERE c.reltoastrelid <> 0
    UNION ALL
    SELECT refs.relation::int8, refs.kind,
           CASE WHEN refs.field IN ({_OPERATORS}) THEN o.oprcode::oid ELSE refs.ref END::int8
    FROM (
        SELECT x.relation, x.kind, m[1] AS field, m[2]::oid AS ref
        FROM {{trees}} AS x, regexp_matches(x.tree, '{_TREE_REFS}', 'g') AS m
        UNION ALL
        SELECT x.relation, x.kind, 'opno', n::oid
        FROM {{trees}} AS x, regexp_matches(x.tree, ':opnos \\(o((?: \\d+)+)\\)', 'g') AS m,
             regexp_split_to_table(btrim(m[1]), ' ') AS n
    ) AS refs
    LEFT JOIN pg_operator AS o ON refs.field IN ({_OPERATORS}) AND o.oid = refs.ref
    WHERE refs.ref <> 0 AND (refs.field NOT IN ({_OPERATORS}) OR o.oprcode <> 0)
    UNION ALL
    -- the functions of the database's own in its indexes' operator families ('x'): support
    -- functions (a btree's comparison, a hash index's hash function) and the functions of their
    -- operators run on every row stored and every scan of the index, named by no statement (red
    -- team eleven: a btree operator class whose comparison function deleted rows, at an INSERT)
    SELECT i.indrelid::int8, 'x', p.amproc::oid::int8
    FROM pg_index AS i, unnest(i.indclass::oid[]) AS k(opclass)
    JOIN pg_opclass AS c ON c.oid = k.opclass
    JOIN pg_amproc AS p ON p.amprocfamily = c.opcfamily
    WHERE p.amproc::oid >= {FIRST_NORMAL_OID}
    UNION ALL
    SELECT i.indrelid::int8, 'x', o.oprcode::oid::int8
    FROM pg_index AS i, unnest(i.indclass::oid[]) AS k(opclass)
    JOIN pg_opclass AS c ON c.oid = k.opclass
    JOIN pg_amop AS a ON a.amopfamily = c.opcfamily
    JOIN pg_operator AS o ON o.oid = a.amopopr
    WHERE o.oprcode::oid >= {FIRST_NORMAL_OID}
    UNION ALL
    SELECT a.attrelid::int8, 'x', dc.function::int8
    FROM ({_DEFAULT_CLASSES}) AS dc
    JOIN (SELECT t.oid AS type, t.oid AS over FROM pg_type AS t
          UNION ALL SELECT t.typelem, t.oid FROM pg_type AS t WHERE t.typelem <> 0
          UNION ALL SELECT t.typbasetype, t.oid FROM pg_type AS t WHERE t.typbasetype <> 0
          UNION ALL SELECT f.atttypid, k.reltype FROM pg_attribute AS f
                    JOIN pg_class AS k ON k.oid = f.attrelid AND k.relkind = 'c'
                    WHERE f.attrelid >= {FIRST_NORMAL_OID} AND f.attnum > 0) AS u ON u.type = dc.type
    JOIN pg_attribute AS a ON a.atttypid = u.over
    WHERE a.attrelid >= {FIRST_NORMAL_OID} AND a.attnum > 0 AND NOT a.attisdropped
    UNION ALL
    -- a foreign table whose remote table's name (postgres_fdw's schema_name and table_name
    -- options, else its own) is a relation's of this database ('L'): what it reads and writes may
    -- be that relation, over a server looping back here (red team twelve: a foreign table of
    -- `public` naming secret.things read and deleted its rows under a rule refusing secret.*)
    SELECT ft.ftrelid::int8, 'L', r.oid::int8
    FROM pg_foreign_table AS ft
    JOIN pg_class AS c ON c.oid = ft.ftrelid
    JOIN pg_namespace AS n ON n.oid = c.relnamespace
    JOIN pg_namespace AS rn ON rn.nspname = coalesce(
        (SELECT substr(o, 13) FROM unnest(ft.ftoptions) AS o WHERE o LIKE 'schema\\_name=%' LIMIT 1), n.nspname)
    JOIN pg_class AS r ON r.relnamespace = rn.oid AND r.relname = coalesce(
        (SELECT substr(o, 12) FROM unnest(ft.ftoptions) AS o WHERE o LIKE 'table\\_name=%' LIMIT 1), c.relname)
    WHERE r.oid <> ft.ftrelid AND r.relkind IN ('r', 'p', 'v', 'm', 'f')
    UNION ALL
    SELECT ft.ftrelid::int8,
           CASE WHEN EXISTS (SELECT FROM unnest(ft.ftoptions) AS opt WHERE opt LIKE 'program=%') THEN 'X' ELSE 'F' END,
           0
    FROM pg_foreign_table AS ft
    JOIN pg_foreign_server AS s ON s.oid = ft.ftserver
    JOIN pg_foreign_data_wrapper AS w ON w.oid = s.srvfdw
    JOIN pg_proc AS h ON h.oid = w.fdwhandler
    WHERE h.proname = 'file_fdw_handler'
    UNION ALL
    -- a built-in relation whose initial privileges (pg_init_privs, else its ACL; none: its owner's
    -- alone) grant no SELECT to PUBLIC: pg_authid's password hashes, pg_largeobject's contents,
    -- pg_user_mapping's options; the upstream role may be a superuser, who reads them all the same
    SELECT c.oid::int8, 'A', 0
    FROM pg_class AS c
    LEFT JOIN pg_init_privs AS i
           ON i.objoid = c.oid AND i.classoid = 'pg_class'::regclass AND i.objsubid = 0
    WHERE c.oid < {FIRST_NORMAL_OID} AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
      AND NOT coalesce(EXISTS (SELECT FROM aclexplode(coalesce(i.initprivs, c.relacl)) AS a
                               WHERE a.grantee = 0 AND a.privilege_type = 'SELECT'), false)
    UNION ALL
    -- ... and of such a relation, each column whose initial privileges grant PUBLIC its SELECT
    -- (pg_subscription's, all but subconninfo): 'a', the attnum
    SELECT c.oid::int8, 'a', att.attnum::int8
    FROM pg_class AS c
    JOIN pg_attribute AS att ON att.attrelid = c.oid AND att.attnum > 0 AND NOT att.attisdropped
    LEFT JOIN pg_init_privs AS i
           ON i.objoid = c.oid AND i.classoid = 'pg_class'::regclass AND i.objsubid = 0
    LEFT JOIN pg_init_privs AS ci
           ON ci.objoid = c.oid AND ci.classoid = 'pg_class'::regclass AND ci.objsubid = att.attnum
    WHERE c.oid < {FIRST_NORMAL_OID} AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
      AND NOT coalesce(EXISTS (SELECT FROM aclexplode(coalesce(i.initprivs, c.relacl)) AS a
                               WHERE a.grantee = 0 AND a.privilege_type = 'SELECT'), false)
      AND coalesce(EXISTS (SELECT FROM aclexplode(coalesce(ci.initprivs, att.attacl)) AS a
                           WHERE a.grantee = 0 AND a.privilege_type = 'SELECT'), false)
) AS e
ORDER BY 1, 2, 3"""


def effects_query(server_version: int) -> str:
    """EFFECTS for a server of ``server_version`` (extended statistics' expressions from 14)."""
    trees = _STORED_TREES.format(statistics=_STATISTICS_TREES if server_version >= 140000 else "")
    return _EFFECTS.replace("{trees}", trees)


#: The effects query of the oldest server supported (tests and tools name one).
EFFECTS = effects_query(0)

# Reading the trees is the one costly query (about 0.3 ms a view): it is asked only for the
# views whose rule changed since the last load (`VIEW_RULES` gives each rule's row version:
# CREATE OR REPLACE VIEW writes a new one), the rest is remembered (`loader.ViewDependencies`).
VIEW_RULES = """
SELECT r.ev_class::int8 AS relation, r.oid::text || '/' || r.xmin::text AS version
FROM pg_rewrite AS r
JOIN pg_class AS c ON c.oid = r.ev_class AND c.relkind IN ('v', 'm')
WHERE r.ev_type = '1'"""

DEPENDENCIES = f"""
WITH rules AS (
    SELECT r.oid, r.ev_class, r.ev_action::text AS tree
    FROM pg_rewrite AS r
    JOIN pg_class AS c ON c.oid = r.ev_class AND c.relkind IN ('v', 'm')
    WHERE r.ev_type = '1' AND r.ev_class = ANY(%(views)s::oid[])
), refs AS (
    SELECT rules.ev_class, m[1] AS field, m[2]::oid AS ref
    FROM rules, regexp_matches(
        rules.tree, ':({"|".join(_FUNCTION_FIELDS + _OPERATOR_FIELDS)}|relid) (\\d+)', 'g') AS m
    UNION ALL
    SELECT rules.ev_class, 'opno', n::oid
    FROM rules, regexp_matches(rules.tree, ':opnos \\(o((?: \\d+)+)\\)', 'g') AS m,
         regexp_split_to_table(btrim(m[1]), ' ') AS n
    UNION ALL
    SELECT rules.ev_class,
           CASE d.refclassid WHEN 'pg_class'::regclass THEN 'relid'
                             WHEN 'pg_operator'::regclass THEN 'opno' ELSE 'funcid' END,
           d.refobjid
    FROM rules
    JOIN pg_depend AS d ON d.classid = 'pg_rewrite'::regclass AND d.objid = rules.oid
    WHERE d.refclassid IN ('pg_proc'::regclass, 'pg_operator'::regclass, 'pg_class'::regclass)
)
SELECT DISTINCT * FROM (
    SELECT refs.ev_class::int8 AS relation,
           CASE WHEN refs.field = 'relid' THEN 'r' ELSE 'f' END AS kind,
           CASE WHEN refs.field IN ({_OPERATORS}) THEN o.oprcode::oid ELSE refs.ref END::int8 AS target
    FROM refs
    LEFT JOIN pg_operator AS o
           ON refs.field IN ({_OPERATORS}) AND o.oid = refs.ref
    WHERE refs.ref <> 0 AND NOT (refs.field = 'relid' AND refs.ref = refs.ev_class)
) AS found
WHERE target IS NOT NULL AND target <> 0
ORDER BY 1, 2, 3"""

# A shell operator (oprcode 0) cannot be used until it is defined: there is nothing to call.
# An operator's rows: its function; and, when it is of the database's own, the function of its
# NEGATOR and of its COMMUTATOR, each in a row of its own under the operator's name: planning puts
# the negator in place of `NOT (a op b)` and may swap the operands of a comparison for its
# commutator (red team fifteen: `WHERE NOT (id OPERATOR(public.<~>) 2)`, whose negator's function
# deleted secret.things, under the agents' policy).
OPERATORS = f"""
SELECT o.oid::int8 AS oid, n.nspname AS schema, o.oprname AS name, o.oprcode::oid::int8 AS function,
       o.oprleft::int8 AS left, o.oprright::int8 AS right
FROM pg_operator AS o
JOIN pg_namespace AS n ON n.oid = o.oprnamespace
WHERE o.oprcode <> 0
UNION ALL
SELECT o.oid::int8, n.nspname, o.oprname, x.oprcode::oid::int8, o.oprleft::int8, o.oprright::int8
FROM pg_operator AS o
JOIN pg_namespace AS n ON n.oid = o.oprnamespace
JOIN pg_operator AS x ON x.oid IN (o.oprnegate, o.oprcom)
WHERE o.oprcode <> 0 AND x.oprcode::oid >= {FIRST_NORMAL_OID} AND x.oprcode <> o.oprcode
ORDER BY 1, 4"""

# Every type a value can be cast to, but the row types of tables, views, sequences, ... and their
# arrays (there is one of each for every table; a composite type made by CREATE TYPE is kept).
# What converting a value to it runs (see `model.TypeFacts`): the functions of a domain's CHECK
# constraints come from their stored expression trees (pg_constraint.conbin), read as the views'
# trees are (pg_depend records no dependency on a pinned function or operator). An array is the
# typarray of its element; typelem alone also marks fixed-length types such as point and name.
_TYPES = f"""
WITH checks AS (
    SELECT k.contypid AS type, m[1] AS field, m[2]::oid AS ref
    FROM pg_constraint AS k, regexp_matches(k.conbin::text, '{_TREE_REFS}', 'g') AS m
    WHERE k.contypid <> 0 AND k.contype = 'c'
    UNION ALL
    SELECT k.contypid, 'opno', n::oid
    FROM pg_constraint AS k, regexp_matches(k.conbin::text, ':opnos \\(o((?: \\d+)+)\\)', 'g') AS m,
         regexp_split_to_table(btrim(m[1]), ' ') AS n
    WHERE k.contypid <> 0 AND k.contype = 'c'
), check_functions AS (
    SELECT checks.type, CASE WHEN checks.field IN ({_OPERATORS}) THEN o.oprcode::oid ELSE checks.ref END AS function
    FROM checks
    LEFT JOIN pg_operator AS o ON checks.field IN ({_OPERATORS}) AND o.oid = checks.ref
)
SELECT t.oid::int8 AS oid, n.nspname AS schema, t.typname AS name, t.typtype AS kind,
       ARRAY(SELECT DISTINCT f.function::int8
             FROM (SELECT t.typinput::oid AS function UNION ALL SELECT t.typmodin::oid
                   UNION ALL SELECT r.rngcanonical::oid
                   UNION ALL SELECT cf.function FROM check_functions AS cf WHERE cf.type = t.oid
                   UNION ALL SELECT unnest(dc.functions)) AS f
             WHERE f.function IS NOT NULL AND f.function <> 0 ORDER BY 1) AS functions,
       ARRAY(SELECT p.part::int8
             FROM (SELECT nullif(t.typbasetype, 0) AS part, 0 AS attnum UNION ALL SELECT e.oid, 0
                   UNION ALL SELECT r.rngsubtype, 0 UNION ALL SELECT {{multirange_of}}, 0
                   UNION ALL SELECT a.atttypid, a.attnum FROM pg_attribute AS a
                   WHERE c.relkind = 'c' AND a.attrelid = t.typrelid AND a.attnum > 0
                     AND NOT a.attisdropped) AS p
             WHERE p.part IS NOT NULL ORDER BY p.attnum, p.part) AS parts
FROM pg_type AS t
JOIN pg_namespace AS n ON n.oid = t.typnamespace
LEFT JOIN pg_type AS e ON e.typarray = t.oid
LEFT JOIN pg_class AS c ON c.oid = coalesce(e.typrelid, t.typrelid)
LEFT JOIN pg_range AS r ON r.rngtypid = t.oid
LEFT JOIN (SELECT d.type, array_agg(d.function) AS functions FROM ({_DEFAULT_CLASSES}) AS d GROUP BY d.type) AS dc
       ON dc.type = t.oid
{{multirange_join}}
WHERE (c.oid IS NULL OR c.relkind = 'c') AND {{part}}
ORDER BY t.oid"""

# The casts made after initdb: initdb's own cast between built-in types only and run built-in
# functions, which do nothing a policy cares about.
CASTS = f"""
SELECT c.oid::int8 AS oid, c.castsource::int8 AS source, c.casttarget::int8 AS target,
       c.castfunc::oid::int8 AS function, c.castcontext AS context, c.castmethod AS method
FROM pg_cast AS c
WHERE c.oid >= {FIRST_NORMAL_OID}
ORDER BY c.oid"""

# pg_settings hides GUC_SUPERUSER_ONLY settings from roles without pg_read_all_settings and
# GUC_NO_SHOW_ALL ones (role, session_authorization, seed, ...) from everyone.
SETTINGS = "SELECT lower(s.name) AS name, s.context AS context FROM pg_settings AS s ORDER BY 1"

# What a plain role sees of pg_settings: read in a savepoint as pg_database_owner (PostgreSQL 14
# and later; a role with no privilege of its own), when the upstream role may take it
# (`loader.read_rows`; the savepoint's end gives the role back).
PLAIN_SETTINGS = "SELECT lower(s.name) AS name FROM pg_settings AS s ORDER BY 1"
# (`trusted` from PostgreSQL 13; before it, none is: `for_version`)
TRUSTED_EXTENSIONS = ("SELECT v.name::text AS name FROM pg_available_extension_versions AS v GROUP BY v.name"
                      " HAVING bool_and(v.trusted) ORDER BY 1")
NO_TRUSTED_EXTENSIONS = "SELECT NULL::text AS name WHERE false"
PLAIN_ROLE = ("SELECT pg_catalog.pg_has_role('pg_database_owner', 'MEMBER')"
              " AND NOT pg_catalog.pg_has_role('pg_database_owner', 'pg_read_all_settings', 'USAGE')")
# Whether the upstream role reads those settings itself, or may become a role that does (SET ROLE):
# a superuser (itself, or a role it is a member of), a member of pg_read_all_settings, inherited or
# not (`Catalog.upstream_reads_hidden`).
HIDDEN_READER = ("SELECT pg_catalog.pg_has_role('pg_read_all_settings', 'MEMBER')"
                 " OR EXISTS (SELECT FROM pg_catalog.pg_roles AS r"
                 " WHERE r.rolsuper AND pg_catalog.pg_has_role(r.oid, 'MEMBER'))")

INDEXES = f"""
SELECT n.nspname AS schema, c.relname AS name, i.indrelid::int8 AS relation
FROM pg_index AS i
JOIN pg_class AS c ON c.oid = i.indexrelid
JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE i.indexrelid >= {FIRST_NORMAL_OID}
ORDER BY 1, 2"""

# (the server's own category: no list of names kept here)
TUNING = "SELECT lower(s.name) AS name FROM pg_settings AS s WHERE s.category LIKE 'Query Tuning%' ORDER BY 1"

SCHEMAS = "SELECT nspname AS name FROM pg_namespace ORDER BY 1"
KEYWORDS = "SELECT k.word AS word FROM pg_catalog.pg_get_keywords() AS k ORDER BY 1"
# (pg_db_role_setting, not the catalog session's own value: a role's or database's setting made
# after this connection opened applies to new sessions only; the role's own, then the database's)
SESSION = """
SELECT 'search_path' AS name, coalesce(
    (SELECT substr(c, 13) FROM pg_catalog.pg_db_role_setting AS s, unnest(s.setconfig) AS c
     WHERE s.setdatabase = d.oid AND s.setrole = r.oid AND c LIKE 'search\\_path=%' LIMIT 1),
    (SELECT substr(c, 13) FROM pg_catalog.pg_db_role_setting AS s, unnest(s.setconfig) AS c
     WHERE s.setdatabase = 0 AND s.setrole = r.oid AND c LIKE 'search\\_path=%' LIMIT 1),
    (SELECT substr(c, 13) FROM pg_catalog.pg_db_role_setting AS s, unnest(s.setconfig) AS c
     WHERE s.setdatabase = d.oid AND s.setrole = 0 AND c LIKE 'search\\_path=%' LIMIT 1),
    (SELECT st.reset_val FROM pg_catalog.pg_settings AS st WHERE st.name = 'search_path')) AS value
FROM pg_catalog.pg_database AS d, pg_catalog.pg_roles AS r
WHERE d.datname = pg_catalog.current_database() AND r.rolname = SESSION_USER"""

# The functions the enabled event triggers run (at DDL, GRANT, ...: ddl_command_start / end, sql_drop,
# table_rewrite), in any session_replication_role ('O' origin, 'R' replica, 'A' always; 'D' disabled)
EVENT_TRIGGERS = ("SELECT DISTINCT e.evtfoid::int8 AS function FROM pg_event_trigger AS e"
                  " WHERE e.evtenabled <> 'D' ORDER BY 1")

# The functions of the database's own (extensions' too) each operator class's family runs: support
# functions (pg_amproc) and operators' functions (pg_amop): an index built with the class runs them.
OPERATOR_CLASSES = f"""
SELECT n.nspname AS schema, c.opcname AS name, p.amproc::oid::int8 AS function
FROM pg_opclass AS c
JOIN pg_namespace AS n ON n.oid = c.opcnamespace
JOIN pg_amproc AS p ON p.amprocfamily = c.opcfamily
WHERE p.amproc::oid >= {FIRST_NORMAL_OID}
UNION
SELECT n.nspname, c.opcname, o.oprcode::oid::int8
FROM pg_opclass AS c
JOIN pg_namespace AS n ON n.oid = c.opcnamespace
JOIN pg_amop AS a ON a.amopfamily = c.opcfamily
JOIN pg_operator AS o ON o.oid = a.amopopr
WHERE o.oprcode::oid >= {FIRST_NORMAL_OID}
ORDER BY 1, 2, 3"""

# Whether the catalog changed since the last load, far cheaper than a load: for each catalog
# table the facts come from, how many rows it has and the sum of their row versions (xmin). DDL
# writes new row versions (CREATE OR REPLACE VIEW its pg_rewrite row, ALTER TABLE RENAME COLUMN
# a pg_attribute row, CREATE OR REPLACE FUNCTION its pg_proc row, a table dropped and made again
# its pg_class and pg_attribute rows), so the answer changes with every committed change (a
# VACUUM FREEZE does not change it: the xmin column reads a frozen row's own xid, from
# PostgreSQL 9.4). It scans those tables whole: 0.14-0.28 s for 300,000 columns (docs/catalog.md).
_CHANGED = ("pg_class", "pg_attribute", "pg_rewrite", "pg_proc", "pg_namespace", "pg_type", "pg_cast",
            "pg_operator", "pg_constraint", "pg_trigger", "pg_attrdef", "pg_policy",
            "pg_inherits", "pg_index", "pg_partitioned_table", "pg_foreign_table", "pg_statistic_ext",
            "pg_db_role_setting", "pg_amproc", "pg_amop", "pg_event_trigger", "pg_opclass",
            # (a role granted, as pg_read_all_settings to the upstream role: `HIDDEN_READER`)
            "pg_auth_members")
CHANGED_TABLES = _CHANGED
CHANGES = "SELECT " + ",\n       ".join(
    f"(SELECT count(*)::text || '/' || coalesce(sum(xmin::text::int8), 0)::text FROM pg_catalog.{table})"
    f" AS {table}" for table in _CHANGED)


def for_version(server_version: int, initdb: bool | None = None) -> dict[str, str]:
    """The queries for a server of ``server_version`` (server_version_num), by kind of fact.

    ``initdb``: for the kinds of `INITDB_KINDS`, True asks only for the rows of initdb's objects
    (OIDs below FIRST_NORMAL_OID), False only for the others; None for all of them.
    """
    if server_version < OLDEST_SERVER_VERSION:
        raise ValueError(
            f"PostgreSQL {server_version // 10000} is older than pgwarden's catalog queries support (11)"
        )
    part = "true" if initdb is None else f"{{column}} {'<' if initdb else '>='} {FIRST_NORMAL_OID}"
    if server_version >= 140000:
        body = "WHEN p.prosqlbody IS NOT NULL THEN pg_get_function_sqlbody(p.oid)"
        sql_body = "p.prosqlbody IS NOT NULL"
        # multiranges exist from 14: a multirange's part is its range type
        multirange_of, multirange_join = "mr.rngtypid", "LEFT JOIN pg_range AS mr ON mr.rngmultitypid = t.oid"
    else:
        body, sql_body = "", "false"
        multirange_of, multirange_join = "NULL::oid", ""
    return {
        "functions": _FUNCTIONS.format(body=body, sql_body=sql_body, part=part.format(column="p.oid")),
        "relations": RELATIONS,
        "attributes": _ATTRIBUTES.format(part=part.format(column="a.attrelid")),
        "definitions": DEFINITIONS,
        "column_types": COLUMN_TYPES,
        "dependencies": DEPENDENCIES,
        "effects": effects_query(server_version),
        "rules": RULES,
        "policies": POLICIES,
        "aggregates": AGGREGATES,
        "operators": OPERATORS,
        "types": _TYPES.format(multirange_of=multirange_of, multirange_join=multirange_join,
                               part=part.format(column="t.oid")),
        "casts": CASTS,
        "settings": SETTINGS,
        "tuning": TUNING,
        "schemas": SCHEMAS,
        "keywords": KEYWORDS,
        "session": SESSION,
        "event_triggers": EVENT_TRIGGERS,
        "operator_classes": OPERATOR_CLASSES,
        "plain_settings": PLAIN_SETTINGS,
        "indexes": INDEXES,
        "trusted_extensions": TRUSTED_EXTENSIONS if server_version >= 130000 else NO_TRUSTED_EXTENSIONS,
    }


#: The kinds whose rows are mostly of initdb's objects (~3,200 functions, ~200 types, the system
#: catalogs' and information_schema's columns): two thirds of a load's time on a new database.
#: `loader.InitdbRows` reads those rows again only when `INITDB_KEY` changed.
INITDB_KINDS = ("functions", "attributes", "types")


def _versions(table: str, key: str, where: str = "") -> str:
    """How many rows ``table`` has (of ``where``), and a sum over their row versions (xmin)."""
    condition = f" WHERE {where}" if where else ""
    return (f"(SELECT count(*)::text || '/' || coalesce(sum(hashtext({key} || ':' || xmin::text)), 0)::text"
            f" FROM pg_catalog.{table}{condition})")


# What the rows of `INITDB_KINDS` for initdb's objects are made of: every catalog row those rows
# are read from (initdb's functions, types, relations and their columns, schemas, languages,
# operators, ranges; the CHECK constraints of its domains; the initial privileges; extension
# membership of functions). Only a superuser can change one of those rows (ALTER FUNCTION on a
# built-in, GRANT / REVOKE on one, ALTER DOMAIN information_schema.*); any change writes a new
# row version, whose xmin is the changing transaction's, and changes the key; a row added or
# removed changes a count. The xmin column reads a row version's own transaction whether VACUUM
# froze it or not (PostgreSQL 9.4 and later keep it), so a change stays seen after a freeze. ~5 ms.
INITDB_KEY = "SELECT " + " || '|' ||\n       ".join((
    _versions("pg_proc", "oid::text", f"oid < {FIRST_NORMAL_OID}"),
    _versions("pg_type", "oid::text", f"oid < {FIRST_NORMAL_OID}"),
    _versions("pg_class", "oid::text", f"oid < {FIRST_NORMAL_OID}"),
    _versions("pg_attribute", "attrelid::text || '.' || attnum::text", f"attrelid < {FIRST_NORMAL_OID}"),
    _versions("pg_namespace", "oid::text", f"oid < {FIRST_NORMAL_OID}"),
    _versions("pg_language", "oid::text"),
    _versions("pg_operator", "oid::text", f"oid < {FIRST_NORMAL_OID}"),
    _versions("pg_range", "rngtypid::text", f"rngtypid < {FIRST_NORMAL_OID}"),
    _versions("pg_constraint", "oid::text", f"contypid <> 0 AND contypid < {FIRST_NORMAL_OID}"),
    _versions("pg_init_privs", "objoid::text || '.' || classoid::text || '.' || objsubid::text"),
    _versions("pg_depend", "objid::text || '.' || refobjid::text",
              "classid = 'pg_proc'::regclass AND refclassid = 'pg_extension'::regclass"),
    _versions("pg_extension", "oid::text"),
)) + " AS key"


# Whether a transaction of another backend, still open, has redefined objects (red team thirteen):
# a view, function, trigger, rule, policy or default replaced or altered writes a new version of
# its catalog row and marks the old one (the one every other session still sees) with its
# transaction's id in xmax, and each open transaction holds a lock on its own id; CREATE TRIGGER,
# CREATE RULE, CREATE POLICY and ALTER TABLE also lock the relation (SHARE ROW EXCLUSIVE or ACCESS
# EXCLUSIVE) until they end. Relations only that transaction can see (made in it: a temporary
# table) are left out. $1: a backend whose relation locks do not count (the session that will run
# the statement: its own TRUNCATE or LOCK TABLE is no redefinition); its rewritten catalog rows do
# (a function a trigger of its own ran may have replaced a view), unless $2 is that backend too (a
# statement whose effect its text fixes: `approvals.runs_no_definitions`). Row locks on catalog
# rows also set xmax: they count too (fail closed).
# A transaction that only *inserts* catalog rows (a new overload of a function, a cast, an
# operator, a relation in an earlier schema of the path) leaves no trace here: nobody else sees
# its rows, and it lets go of the catalog's lock at once. What it changes reaches a statement
# parsed after it committed: one that waited, while being parsed, for a relation lock it holds
# (red team fourteen: `LOCK TABLE things IN SHARE MODE`, or a CREATE INDEX, beside a new
# overload; the approved DELETE waited for the lock, then called the overload). So a relation
# held in any mode a write's ROW EXCLUSIVE lock waits for counts too (SHARE and EXCLUSIVE as well).
# A statement may also be parsed after a wait of another kind: a row lock (no trace in pg_locks
# until someone waits) taken by a statement ahead of it, in its own text or sent before it by its
# session and not answered yet. Then $3 is true, and any open transaction of another backend of
# the database that has written (it holds a lock on its own transaction id) counts (fail closed).
_REDEFINED_ROWS = " UNION ALL ".join(
    f"SELECT xmax FROM pg_catalog.{table} WHERE xmax::text <> '0'"
    for table in ("pg_rewrite", "pg_proc", "pg_trigger", "pg_policy", "pg_attrdef", "pg_class",
                  "pg_constraint", "pg_type", "pg_operator", "pg_cast", "pg_namespace"))
OPEN_REDEFINITIONS = f"""
SELECT EXISTS (
  SELECT 1 FROM pg_catalog.pg_locks AS l
  WHERE l.granted AND l.pid <> pg_catalog.pg_backend_pid() AND (
    (l.locktype = 'relation' AND l.pid <> %s
     AND l.mode IN ('ShareLock', 'ShareRowExclusiveLock', 'ExclusiveLock', 'AccessExclusiveLock')
     AND l.database = (SELECT d.oid FROM pg_catalog.pg_database AS d
                       WHERE d.datname = pg_catalog.current_database())
     AND l.relation IN (SELECT c.oid FROM pg_catalog.pg_class AS c))
    OR (l.locktype = 'transactionid' AND l.mode = 'ExclusiveLock' AND l.pid <> %s
        AND l.transactionid IN ({_REDEFINED_ROWS}))
    OR (%s AND l.locktype = 'transactionid' AND l.mode = 'ExclusiveLock' AND l.pid <> %s
        AND l.pid IN (SELECT a.pid FROM pg_catalog.pg_stat_activity AS a
                      WHERE a.datname = pg_catalog.current_database()))))"""
