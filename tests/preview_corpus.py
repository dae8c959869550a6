"""Table of preview queries and the verdict the preview must reach for each.

Each case is ``(id, sql, expected)``: ``expected`` is ``"accept"``, the reason
sevvo.runtime.preview_validator rejects it with, or ``NOT_ALLOWED`` for a statement the validator
passes and the allow-list check in the preview's transaction refuses (agent.preview_functions).
Accepted cases run against the schema in ``SCHEMA`` (tests execute them on a real server), so
they must stay valid SQL there; rejected ones need not. Cases naming extension functions are
judged the same whether the extension is installed or not.
"""

from __future__ import annotations

from typing import Final

from sevvo.runtime.preview_validator import MAX_SQL_BYTES

ACCEPT: Final = "accept"
NOT_ALLOWED: Final = "function_not_allowed"
FORBIDDEN: Final = "forbidden_function"

# Objects the accepted cases read. Created in a fresh database before running them.
SCHEMA: Final = """
create table t (a int, b text, j jsonb, arr int[], x text);
insert into t values (1, 'one', '{"k": 1, "l": [1, 2]}', '{1,2}', '<a>1</a>'),
                     (2, 'two', '{"k": 2}', '{3}', '<a>2</a>');
create table u (a int, c text);
insert into u values (1, 'u1');
create table prices (lo_price int, nextval int);
insert into prices values (5, 6);
create table "Ünïcödé" ("ñame" text);
insert into "Ünïcödé" values ('x');
create sequence s;
create index t_a on t (a);
-- Same-named functions and operators outside pg_catalog, as an extension or a user with
-- CREATE on public could add: a bare name that reaches them is refused.
create function public.lower(integer) returns integer language sql immutable as 'select $1';
create function public.point_int_distance(point, integer) returns float8
    language sql immutable as 'select 0::float8';
create operator public.<-> (leftarg = point, rightarg = integer,
                            function = public.point_int_distance);
"""

# Accepted cases that exhaust a resource (memory, temporary files, CPU) until the statement
# timeout or Postgres' 1 GB value limit stops them: timing out or failing is their outcome.
BLOW_UPS: Final = frozenset(
    {"memory_repeat", "memory_string_agg", "temp_file_sort", "cpu_series", "cpu_cross_join"}
)

# Accepted cases that need a server built with libxml (the embedded test server is not).
NEEDS_LIBXML: Final = frozenset({"xml_functions"})

# Accepted cases using SQL/JSON, which PostgreSQL has from version 17 on.
NEEDS_17: Final = frozenset({"sql_json", "json_table"})

CORPUS: Final[list[tuple[str, str, str]]] = [
    # --- legitimate reads -----------------------------------------------------------------
    ("select_1", "select 1", ACCEPT),
    ("table_t", "TABLE t", ACCEPT),
    ("values", "VALUES (1),(2)", ACCEPT),
    ("parenthesized", "(select 1)", ACCEPT),
    ("parenthesized_union", "((select 1) union (select 2))", ACCEPT),
    ("union_all", "select a from t union all select a from u", ACCEPT),
    ("intersect_except", "select a from t intersect select a from u except select 3", ACCEPT),
    ("string_with_semicolon", "select ';' as semi", ACCEPT),
    ("dollar_quote_with_semicolon", "select $$a;b$$", ACCEPT),
    ("tagged_dollar_quote", "select $tag$ ; delete from t; $tag$ as s", ACCEPT),
    ("string_that_looks_like_ddl", "select 'drop table t'", ACCEPT),
    ("leading_line_comment", "-- comment\nselect 1", ACCEPT),
    ("trailing_line_comment", "select 1 -- trailing comment", ACCEPT),
    ("trailing_semicolon", "select 1;", ACCEPT),
    ("trailing_semicolon_space", "select 1; ", ACCEPT),
    ("several_trailing_semicolons", "select 1;;\n;", ACCEPT),
    ("block_comments_around", "/* c */ select 1 /* d */", ACCEPT),
    ("comment_inside", "select /* inner ; comment */ 1 as one", ACCEPT),
    ("comment_after_semicolon", "select 1; -- delete from t", ACCEPT),
    ("nested_block_comment", "select 1 /* outer /* inner */ still comment */", ACCEPT),
    ("cte", "with x as (select 1 as n) select * from x", ACCEPT),
    (
        "recursive_cte",
        "with recursive r(n) as (select 1 union all select n + 1 from r where n < 5)"
        " select * from r",
        ACCEPT,
    ),
    (
        "cte_search_cycle",
        "with recursive r(n) as (select 1 union all select n + 1 from r where n < 3)"
        " search depth first by n set o cycle n set c using p select n from r",
        ACCEPT,
    ),
    ("materialized_cte", "with x as materialized (select a from t) select * from x", ACCEPT),
    ("join", "select t.a, u.c from t join u on u.a = t.a", ACCEPT),
    ("left_join_using", "select * from t left join u using (a)", ACCEPT),
    ("window_function", "select a, row_number() over (order by a) from t", ACCEPT),
    (
        "named_window_frame",
        "select sum(a) over w from t window w as (order by a rows between 1 preceding"
        " and current row)",
        ACCEPT,
    ),
    (
        "aggregate_group_by",
        "select b, count(*), max(a) from t group by b having count(*) > 0",
        ACCEPT,
    ),
    ("rollup_grouping", "select a, grouping(a) from t group by rollup (a)", ACCEPT),
    (
        "ordered_set_aggregate",
        "select percentile_cont(0.5) within group (order by a) from t",
        ACCEPT,
    ),
    ("count_filter", "select count(*) filter (where true) from t", ACCEPT),
    ("pg_sleep", "select pg_sleep(1)", ACCEPT),
    ("now", "select now()", ACCEPT),
    ("current_setting", "select current_setting('search_path')", ACCEPT),
    ("sequence_read", "select last_value from s", ACCEPT),
    ("generate_series", "select * from generate_series(1, 10)", ACCEPT),
    ("rows_from", "select * from rows from (generate_series(1, 2), unnest(array['a'])) r", ACCEPT),
    ("scalar_subquery", "select (select max(a) from t) as m", ACCEPT),
    ("subquery_in_from", "select * from (select a from t) q where q.a > 0", ACCEPT),
    ("exists_in_where", "select * from t where exists (select 1 from u where u.a = t.a)", ACCEPT),
    ("in_subquery", "select * from t where a in (select a from u)", ACCEPT),
    ("lateral", "select * from t, lateral (select t.a * 2 as d) l", ACCEPT),
    ("lateral_function", "select * from t cross join lateral unnest(t.arr) as e(v)", ACCEPT),
    ("casts", "select '1'::int, cast('2' as bigint), 1::text, '{1}'::int[]", ACCEPT),
    ("escape_string", "select E'\\n'", ACCEPT),
    ("unicode_identifiers", 'select "ñame" from "Ünïcödé"', ACCEPT),
    ("unicode_literal", "select 'héllo wörld ✓' as greeting -- ünïcode comment", ACCEPT),
    ("concatenation", "select 'a' || 'b'", ACCEPT),
    (
        "jsonb_operators",
        "select j -> 'k', j ->> 'k', j #> '{l,0}', j @> '{\"k\": 1}' from t",
        ACCEPT,
    ),
    ("sql_json", "select json_value(j, '$.k' returning int), j is json object from t", ACCEPT),
    (
        "json_table",
        "select * from json_table('[{\"a\": 1}]', '$[*]' columns (a int path '$.a'))",
        ACCEPT,
    ),
    ("arrays", "select array[1, 2, 3], (array[1, 2])[1], arr[1:1] from t", ACCEPT),
    (
        "case_coalesce",
        "select case when a > 1 then 'big' else 'small' end, coalesce(b, '') from t",
        ACCEPT,
    ),
    (
        "xml_functions",
        "select xmlelement(name e, xmlattributes(a as n)), xmlparse(content x) from t",
        ACCEPT,
    ),
    ("tablesample", "select * from t tablesample bernoulli (100) repeatable (1)", ACCEPT),
    (
        "distinct_on_order_limit",
        "select distinct on (a) a, b from t order by a, b desc limit 5 offset 0",
        ACCEPT,
    ),
    ("fetch_first", "select a from t order by a fetch first 1 rows with ties", ACCEPT),
    ("named_argument", "select make_interval(days => 1)", ACCEPT),
    ("row_comparison", "select row(1, 2) < row(1, 3), (1, 'a') = (1, 'a')", ACCEPT),
    ("qualified_safe_function", "select pg_catalog.upper('a'), pg_catalog.pg_sleep(0)", ACCEPT),
    ("unqualified_deny_named_column", "select lo_price, nextval from prices", ACCEPT),
    ("like_and_regex", "select 'abc' like 'a%', 'abc' ~ '^a', 'a\\d' similar to 'a%'", ACCEPT),
    ("regex_with_backslash", "select 'a1' ~ '\\d+', regexp_replace('a  b', '\\s+', ' ')", ACCEPT),
    ("escape_string_with_quote", "select E'it\\'s'", ACCEPT),
    ("doubled_quote", "select 'it''s'", ACCEPT),
    ("uppercase_keywords", "SELECT A FROM T WHERE A IS NOT NULL", ACCEPT),
    # --- not one statement ----------------------------------------------------------------
    ("empty", "", "empty"),
    ("whitespace_only", "  \n\t ", "empty"),
    ("comment_only", "-- just a comment", "empty"),
    ("block_comment_only", "/* nothing ; here */", "empty"),
    ("semicolons_only", ";;", "empty"),
    ("too_long", "select '" + "x" * MAX_SQL_BYTES + "'", "too_long"),
    ("too_long_in_utf8", "select '" + "é" * (MAX_SQL_BYTES // 2) + "'", "too_long"),
    ("deeply_nested", "select " + "-".join(["1"] * 30_000), "too_complex"),
    ("nul_character", "select 1\0; delete from t", "invalid_character"),
    ("lone_surrogate", "select '\ud800'", "invalid_character"),
    ("two_statements", "select 1; delete from t", "multiple_statements"),
    ("after_string_semicolon", "select ';'; delete from t", "multiple_statements"),
    ("after_comment_semicolon", "select 1 /* ; */; drop table t", "multiple_statements"),
    ("after_dollar_quote", "select $$;$$; truncate t", "multiple_statements"),
    ("after_empty_comment", "select 1;/* */delete from t", "multiple_statements"),
    ("after_line_comment", "select 1 -- x\n; update t set a = 1", "multiple_statements"),
    ("two_selects", "select 1; select 2", "multiple_statements"),
    ("parse_error", "select 1 from where", "parse_error"),
    ("unterminated_string", "select 'abc", "parse_error"),
    ("unterminated_comment", "select 1 /* ; delete from t", "parse_error"),
    ("error_at_end_of_input", "select 1; delete", "parse_error"),
    ("not_sql", "hello world", "parse_error"),
    ("unicode_parse_error", "select 'é' from where", "parse_error"),
    # --- statements that are not a plain read ---------------------------------------------
    ("insert", "insert into t (a) values (1)", "not_a_read"),
    ("update", "update t set a = 2", "not_a_read"),
    ("delete", "delete from t", "not_a_read"),
    ("merge", "merge into t using u on t.a = u.a when matched then delete", "not_a_read"),
    ("truncate", "truncate t", "not_a_read"),
    ("create_table", "create table v (a int)", "not_a_read"),
    ("create_table_as", "create table v as select 1", "not_a_read"),
    ("drop", "drop table t", "not_a_read"),
    ("alter", "alter table t add column z int", "not_a_read"),
    ("grant", "grant select on t to public", "not_a_read"),
    ("vacuum", "vacuum t", "not_a_read"),
    ("lock", "lock table t in access exclusive mode", "not_a_read"),
    ("listen", "listen chan", "not_a_read"),
    ("notify", "notify chan, 'payload'", "not_a_read"),
    ("begin", "begin", "not_a_read"),
    ("commit", "commit", "not_a_read"),
    ("declare_cursor", "declare c cursor for select 1", "not_a_read"),
    ("show", "show search_path", "not_a_read"),
    ("explain", "explain select 1", "not_a_read"),
    ("explain_analyze_delete", "explain analyze delete from t", "not_a_read"),
    ("copy_to", "copy t to '/tmp/t.csv'", "not_a_read"),
    ("copy_query_to_stdout", "copy (select * from t) to stdout", "not_a_read"),
    ("copy_from_program", "copy t from program 'curl http://example.com'", "not_a_read"),
    ("call", "call do_things()", "not_a_read"),
    ("do_block", "do $$ begin delete from t; end $$", "not_a_read"),
    ("execute", "execute stmt(1)", "not_a_read"),
    ("prepare", "prepare stmt as select 1", "not_a_read"),
    ("set", "set search_path = evil", "not_a_read"),
    ("set_local", "set local statement_timeout = 0", "not_a_read"),
    ("set_transaction_read_write", "set transaction read write", "not_a_read"),
    ("reset", "reset all", "not_a_read"),
    ("comment_hides_delete", "/* select 1 */ delete from t", "not_a_read"),
    # --- hostile reads --------------------------------------------------------------------
    ("cte_delete", "with x as (delete from t returning *) select * from x", "data_modifying_cte"),
    (
        "cte_update",
        "with x as (update t set a = 1 returning a) select * from x",
        "data_modifying_cte",
    ),
    (
        "cte_insert",
        "with x as (insert into t (a) values (1) returning a) select 1",
        "data_modifying_cte",
    ),
    (
        "cte_merge",
        "with x as (merge into t using u on t.a = u.a when matched then delete returning t.a)"
        " select * from x",
        "data_modifying_cte",
    ),
    (
        "cte_second_of_two",
        "with ok as (select 1), bad as (delete from t returning a) select * from ok",
        "data_modifying_cte",
    ),
    (
        "cte_nested_in_subquery",
        "select * from (with x as (delete from t returning a) select * from x) q",
        "data_modifying_cte",
    ),
    (
        "cte_nested_in_cte",
        "with outer_cte as (with inner_cte as (update t set a = 0 returning a)"
        " select * from inner_cte) select * from outer_cte",
        "data_modifying_cte",
    ),
    ("select_into", "select * into stolen from t", "select_into"),
    ("select_into_temp", "select 1 into temporary table x", "select_into"),
    ("for_update", "select * from t for update", "locking_clause"),
    ("for_share", "select * from t for share", "locking_clause"),
    ("for_no_key_update", "select * from t for no key update", "locking_clause"),
    ("for_key_share_skip_locked", "select * from t for key share skip locked", "locking_clause"),
    ("for_update_of_nowait", "select * from t, u for update of t nowait", "locking_clause"),
    ("for_update_in_subquery", "select * from (select * from t for update) q", "locking_clause"),
    ("for_share_in_sublink", "select (select a from t limit 1 for share)", "locking_clause"),
    (
        "for_update_in_cte",
        "with x as (select * from t for update) select * from x",
        "locking_clause",
    ),
    ("for_update_in_union_arm", "(select a from t for update) union select 1", "locking_clause"),
    # --- forbidden functions, one per group and in every hiding place ---------------------
    ("advisory_lock", "select pg_advisory_lock(1)", "forbidden_function"),
    ("try_advisory_xact_lock", "select pg_try_advisory_xact_lock(1)", "forbidden_function"),
    ("advisory_unlock_all", "select pg_advisory_unlock_all()", "forbidden_function"),
    (
        "terminate_backend",
        "select pg_terminate_backend(pid) from pg_stat_activity",
        "forbidden_function",
    ),
    ("cancel_backend", "select pg_cancel_backend(1)", "forbidden_function"),
    ("reload_conf", "select pg_reload_conf()", "forbidden_function"),
    ("set_config", "select set_config('search_path', 'evil', false)", "forbidden_function"),
    (
        "set_config_qualified",
        "select pg_catalog.set_config('a.b', 'c', false)",
        "forbidden_function",
    ),
    ("set_config_quoted_upper", "select \"SET_CONFIG\"('a.b', 'c', false)", "forbidden_function"),
    ("nextval", "select nextval('s')", "forbidden_function"),
    ("setval_in_where", "select 1 from t where setval('s', 100) > 0", "forbidden_function"),
    ("lo_import", "select lo_import('/etc/passwd')", "forbidden_function"),
    ("lo_export", "select lo_export(1, '/tmp/x')", "forbidden_function"),
    ("lo_unlink_in_subquery", "select * from (select lo_unlink(1)) q", "forbidden_function"),
    ("lo_from_bytea", "select lo_from_bytea(0, 'x')", "forbidden_function"),
    ("lowrite", "select lowrite(0, 'x')", "forbidden_function"),
    ("pg_read_file", "select pg_read_file('/etc/passwd')", "forbidden_function"),
    (
        "pg_read_binary_file",
        "select pg_read_binary_file('global/pg_control')",
        "forbidden_function",
    ),
    ("pg_ls_dir", "select * from pg_ls_dir('.')", "forbidden_function"),
    ("pg_ls_waldir", "select * from pg_ls_waldir()", "forbidden_function"),
    ("pg_stat_file", "select pg_stat_file('postgresql.conf')", "forbidden_function"),
    ("dblink", "select * from dblink('host=x', 'delete from t') as r(n int)", "forbidden_function"),
    ("dblink_exec", "select dblink_exec('host=x', 'drop table t')", "forbidden_function"),
    ("pg_notify", "select pg_notify('chan', 'payload')", "forbidden_function"),
    (
        "query_to_xml",
        "select query_to_xml('delete from t returning 1', true, false, '')",
        "forbidden_function",
    ),
    ("table_to_xml", "select table_to_xml('t', true, false, '')", "forbidden_function"),
    ("ts_stat", "select * from ts_stat('select to_tsvector(b) from t')", "forbidden_function"),
    (
        "create_replication_slot",
        "select pg_create_logical_replication_slot('x', 'pgoutput')",
        "forbidden_function",
    ),
    ("drop_replication_slot", "select pg_drop_replication_slot('x')", "forbidden_function"),
    ("switch_wal", "select pg_switch_wal()", "forbidden_function"),
    ("backup_start", "select pg_backup_start('x')", "forbidden_function"),
    (
        "logical_emit_message",
        "select pg_logical_emit_message(true, 'p', 'm')",
        "forbidden_function",
    ),
    ("promote", "select pg_promote()", "forbidden_function"),
    ("wal_replay_pause", "select pg_wal_replay_pause()", "forbidden_function"),
    ("txid_current", "select txid_current()", "forbidden_function"),
    ("stat_reset", "select pg_stat_reset()", "forbidden_function"),
    ("brin_summarize", "select brin_summarize_new_values('t_idx')", "forbidden_function"),
    ("in_cte", "with x as (select nextval('s') as n) select * from x", "forbidden_function"),
    (
        "in_function_argument",
        "select coalesce(null, pg_advisory_lock(1)::text)",
        "forbidden_function",
    ),
    ("in_order_by", "select a from t order by pg_terminate_backend(a)", "forbidden_function"),
    (
        "in_lateral",
        "select * from t, lateral (select set_config('a.b', t.b, false)) l",
        "forbidden_function",
    ),
    (
        "in_rows_from",
        "select * from rows from (generate_series(1, 2), nextval('s')) r",
        "forbidden_function",
    ),
    ("in_group_by", "select count(*) from t group by pg_notify('c', b)", "forbidden_function"),
    ("in_having", "select 1 from t having lo_unlink(1) > 0", "forbidden_function"),
    (
        "in_window_partition",
        "select count(*) over (partition by nextval('s')) from t",
        "forbidden_function",
    ),
    (
        "in_aggregate_filter",
        "select count(*) filter (where pg_advisory_lock(1) is null) from t",
        "forbidden_function",
    ),
    ("as_aggregate_argument", "select max(nextval('s')) from t", "forbidden_function"),
    ("in_case", "select case when a > 0 then pg_read_file('x') end from t", "forbidden_function"),
    ("in_values", "values (1), (nextval('s'))", "forbidden_function"),
    ("in_limit", "select 1 limit pg_advisory_lock(1)::text::int", "forbidden_function"),
    ("in_union_arm", "select 1 union select pg_switch_wal()::text::int", "forbidden_function"),
    (
        "in_join_condition",
        "select * from t join u on pg_notify('c', 'x') is null",
        "forbidden_function",
    ),
    (
        "in_tablesample_argument",
        "select * from t tablesample system (nextval('s'))",
        "forbidden_function",
    ),
    ("in_cast", "select cast(nextval('s') as text)", "forbidden_function"),
    ("three_part_name", "select mydb.pg_catalog.nextval('s')", "forbidden_function"),
    # Postgres reads x.f as f(x): r.nextval advances the sequence named by r.
    ("attribute_call_on_alias", "select r.nextval from to_regclass('s') r", "forbidden_function"),
    ("attribute_call_on_value", "select (1).pg_advisory_lock", "forbidden_function"),
    (
        "attribute_call_in_where",
        "select 1 from generate_series(7, 7) g where g.pg_advisory_lock is null",
        "forbidden_function",
    ),
    ("qualified_deny_named_column", "select prices.lo_price from prices", "forbidden_function"),
    # With standard_conforming_strings off, the server reads \' as a quote inside the string.
    (
        "backslash_quote_hides_call",
        "select 'a\\' as x, ' , pg_advisory_lock(7) as y -- '",
        "ambiguous_string",
    ),
    ("literal_ending_in_backslash", "select 'C:\\'", "ambiguous_string"),
    # --- syntax a preview cannot use ------------------------------------------------------
    ("parameter_placeholder", "select * from t where a = $1", "unsupported_syntax"),
    # --- the allow-list: decided by the catalog, in the preview's transaction ---------------
    ("shadowed_builtin", "select lower(b) from t", NOT_ALLOWED),
    ("shadowed_builtin_qualified", "select pg_catalog.lower(b) from t", ACCEPT),
    ("shadowed_operator", "select point(0, 0) <-> point(1, 1)", NOT_ALLOWED),
    (
        "shadowed_operator_qualified",
        "select point(0, 0) operator(pg_catalog.<->) point(1, 1)",
        ACCEPT,
    ),
    ("user_function", "select public.point_int_distance(point(0, 0), 1)", NOT_ALLOWED),
    ("unknown_function", "select no_such_function(1)", NOT_ALLOWED),
    ("unlisted_builtin_setseed", "select setseed(0.5)", NOT_ALLOWED),
    ("unlisted_builtin_blocking_pids", "select pg_blocking_pids(1)", NOT_ALLOWED),
    ("unlisted_builtin_logfile", "select pg_current_logfile()", NOT_ALLOWED),
    ("unlisted_builtin_control_file", "select * from pg_control_system()", NOT_ALLOWED),
    ("unlisted_builtin_input_check", "select pg_input_is_valid('1', 'int4')", NOT_ALLOWED),
    ("extension_tablesample", "select * from t tablesample system_rows (1)", NOT_ALLOWED),
    ("extension_function", "select * from normal_rand(3, 0, 1)", NOT_ALLOWED),
    ("extension_visibility_map", "select * from pg_visibility_map('t')", NOT_ALLOWED),
    (
        "extension_buffer_cache",
        "select * from pg_buffercache_pages() as b(a int, b oid)",
        NOT_ALLOWED,
    ),
    # --- SQL carried in text arguments of extension functions (tablefunc, xml2, dblink) ----
    ("crosstab", "select * from crosstab('select 1, 2, 3') as ct(a int, b int)", FORBIDDEN),
    (
        "crosstab_writes",
        "select * from crosstab('delete from t returning a, a, a') as ct(a int, b int)",
        FORBIDDEN,
    ),
    (
        "crosstab_qualified",
        "select * from public.crosstab3('select b, b, b from t') as ct(a text, b text, c text)",
        FORBIDDEN,
    ),
    (
        "connectby",
        "select * from connectby('t', 'a', 'a', '1', 0) as c(a int, b int, l int)",
        FORBIDDEN,
    ),
    (
        "xpath_table",
        "select * from xpath_table('a', 'x', 't', '/a', 'pg_advisory_lock(1) is null')"
        " as x(a int, v text)",
        FORBIDDEN,
    ),
    (
        "dblink_other_host",
        "select * from dblink('host=203.0.113.7 dbname=d user=u password=p',"
        " 'delete from t returning a') as r(a int)",
        FORBIDDEN,
    ),
    ("dblink_connect", "select dblink_connect('c', 'dbname=postgres')", FORBIDDEN),
    (
        "query_to_xml_lock",
        "select query_to_xml('select pg_advisory_lock(1)', true, false, '')",
        FORBIDDEN,
    ),
    # --- what superuser credentials reach, and extensions' side effects ---------------------
    ("heap_force_kill", "select heap_force_kill('t'::regclass, array['(0,1)'::tid])", FORBIDDEN),
    (
        "heap_force_freeze",
        "select heap_force_freeze('t'::regclass, array['(0,1)'::tid])",
        FORBIDDEN,
    ),
    ("truncate_visibility_map", "select pg_truncate_visibility_map('t')", FORBIDDEN),
    ("raw_page", "select get_raw_page('t', 0)", FORBIDDEN),
    ("index_parent_check", "select bt_index_parent_check('t_a')", FORBIDDEN),
    ("heap_verify", "select * from verify_heapam('t')", FORBIDDEN),
    ("prewarm", "select pg_prewarm('t')", FORBIDDEN),
    ("prewarm_worker", "select autoprewarm_start_worker()", FORBIDDEN),
    ("prewarm_dump_file", "select autoprewarm_dump_now()", FORBIDDEN),
    ("adminpack_write", "select pg_file_write('x', 'y', false)", FORBIDDEN),
    ("old_read_file", "select pg_read_file('postgresql.conf', 0, 200)", FORBIDDEN),
    ("password_hashes", "select rolname, rolpassword from pg_authid", ACCEPT),
    ("server_file_settings", "select * from pg_file_settings", ACCEPT),
    # --- expressions that ignore cancel: libxml2 evaluates XPath without interrupt checks ----
    ("xpath", "select xpath('/a', x::xml) from t", FORBIDDEN),
    (
        "xpath_exponential",
        "select xpath('//a[count(//a[count(//a[count(//a)>0])>0])>0]', x::xml) from t",
        FORBIDDEN,
    ),
    ("xpath_exists", "select xpath_exists('/a', x::xml) from t", FORBIDDEN),
    ("xmlexists", "select xmlexists('//a' passing (x::xml)) from t", FORBIDDEN),
    (
        "xmltable",
        "select v from t, xmltable('/a' passing (t.x::xml) columns v int path '.')",
        "unsupported_syntax",
    ),
    ("xslt", "select xslt_process('<a/>', '<x/>')", FORBIDDEN),
    ("xml2_xpath_string", "select xpath_string('<a>1</a>', '/a')", FORBIDDEN),
    # --- resource blow-ups: accepted, bounded by the timeout and the transaction's settings --
    ("memory_repeat", "select length(repeat('x', 300000000))", ACCEPT),
    (
        "memory_string_agg",
        "select length(string_agg(repeat('x', 1000000), '')) from generate_series(1, 3000)",
        ACCEPT,
    ),
    (
        "temp_file_sort",
        "select count(*) from (select g from generate_series(1, 50000000) g order by g desc) s",
        ACCEPT,
    ),
    ("cpu_series", "select count(*) from generate_series(1, 10000000000)", ACCEPT),
    (
        "cpu_cross_join",
        "select count(*) from generate_series(1, 100000) a, generate_series(1, 100000) b",
        ACCEPT,
    ),
]
