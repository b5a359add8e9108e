"""psycopg tests expected to fail with the fixture swap, each group with its reason.

Found by ``tests/psycopg_suite/run.py`` with psycopg 3.3.4's tests (the newest
release whose tests a source had; see run.py) on boundkit at the branch point of
issue 12. Keys are test functions, parameters left out. ``KNOWN`` groups are
boundkit bugs that issue 12 lists (branch ``pg`` fixes them): they run as
``xfail(strict=False)``, so a fix shows as XPASS, and the entry can go.
``DESIGN`` groups are differences kept on purpose; docs/pg.md lists them.
"""

from __future__ import annotations

REASONS = {
    "R9": (
        "KNOWN",
        (
            "issue 12 #9 (branch pg): the lent object is not a psycopg.Connection: "
            "isinstance() checks (TypeInfo.fetch, is_crdb, psycopg's test helpers), `with "
            "conn:` and `cursor.connection is conn` fail"
        ),
    ),
    "R5": (
        "KNOWN",
        (
            "issue 12 #5 (branch pg): a block ending on a closed or busy connection raises "
            "the error of restoring `autocommit` instead of the block's own exception"
        ),
    ),
    "R7": (
        "KNOWN",
        (
            "issue 12 #7 (branch pg): AdminShutdown (57P01) comes out as a plain "
            "OperationalError with no sqlstate"
        ),
    ),
    "R8DEL": (
        "KNOWN",
        (
            "issue 12 #8 (branch pg): `del conn.attr` is not forwarded, so monkeypatch "
            "cannot undo its patch of conn._exec_command"
        ),
    ),
    "R6": (
        "KNOWN",
        (
            "issue 12 #6 (branch pg): psycopg's transaction bookkeeping (_num_transactions)"
            " left by an earlier borrower breaks transaction() and commit()"
        ),
    ),
    "R8ADAPT": (
        "KNOWN",
        (
            "issue 12 #8 (branch pg): dumpers an earlier test registered on conn.adapters "
            "reach this borrower"
        ),
    ),
    "R8HANDLERS": (
        "KNOWN",
        ("issue 12 #8 (branch pg): notify handlers an earlier test added reach this borrower"),
    ),
    "R8PATCH": (
        "KNOWN",
        (
            "issue 12 #8 (branch pg): an earlier test's monkeypatch of conn._exec_command "
            "could not be undone (`del` is not forwarded) and stays on the connection, "
            "holding that test's closed lease"
        ),
    ),
    "PARAMS": (
        "DESIGN",
        (
            "by design: create_pool() sets each connection's connect_timeout (5 s) and "
            "options (statement_timeout, idle_in_transaction_session_timeout), so "
            "conn.info.get_parameters() differs from the test's DSN"
        ),
    ),
    "PREPARED": (
        "DESIGN",
        (
            "by design: the pooled connection is reused, and psycopg numbers prepared "
            "statements per connection: after the reset the names go on from the last "
            "borrower's (_pg3_13, not _pg3_0)"
        ),
    ),
}

# in both modes
EVERY_MODE: dict[str, list[str]] = {
    "R9": [
        "tests/test_connection.py::test_context_close",
        "tests/test_connection.py::test_context_commit",
        "tests/test_connection.py::test_context_rollback",
        "tests/test_connection_async.py::test_context_close",
        "tests/test_connection_async.py::test_context_commit",
        "tests/test_connection_async.py::test_context_rollback",
        "tests/test_copy.py::test_set_custom_type",
        "tests/test_copy_async.py::test_set_custom_type",
        "tests/test_cursor_common.py::test_typeinfo",
        "tests/test_cursor_common_async.py::test_typeinfo",
        "tests/test_cursor_server.py::test_connection",
        "tests/test_cursor_server_async.py::test_connection",
        "tests/test_errors.py::test_diag_attr_values",
        "tests/test_errors.py::test_query_context",
        "tests/test_sql.py::TestLiteral::test_invalid_name",
        "tests/test_transaction.py::test_autocommit_off_and_tx_in_progress_exception_exit",
        "tests/test_transaction.py::test_autocommit_off_and_tx_in_progress_successful_exit",
        "tests/test_transaction.py::test_autocommit_off_but_no_tx_started_exception_exit",
        "tests/test_transaction.py::test_autocommit_off_but_no_tx_started_successful_exit",
        "tests/test_transaction.py::test_commit_on_successful_exit",
        "tests/test_transaction.py::test_explicit_rollback_discards_changes",
        "tests/test_transaction.py::test_explicit_rollback_of_enclosing_tx_outer_tx_unaffected",
        "tests/test_transaction.py::test_explicit_rollback_of_outer_transaction",
        "tests/test_transaction.py::test_explicit_rollback_outer_tx_unaffected",
        "tests/test_transaction.py::test_exposes_associated_connection",
        "tests/test_transaction.py::test_force_rollback_exception_exit",
        "tests/test_transaction.py::test_force_rollback_successful_exit",
        "tests/test_transaction.py::test_interaction_dbapi_transaction",
        "tests/test_transaction.py::test_named_savepoints_with_repeated_names_works",
        "tests/test_transaction.py::test_nested_all_changes_discarded_on_inner_exception",
        "tests/test_transaction.py::test_nested_all_changes_discarded_on_outer_exception",
        "tests/test_transaction.py::test_nested_all_changes_persisted_on_successful_exit",
        "tests/test_transaction.py::test_nested_inner_scope_exception_handled_in_outer_scope",
        "tests/test_transaction.py::test_nested_three_levels_successful_exit",
        "tests/test_transaction.py::test_rollback_on_exception_exit",
        "tests/test_transaction_async.py::test_exposes_associated_connection",
        "tests/types/test_array.py::test_array_register",
        "tests/types/test_composite.py::test_callable_dumper_not_registered",
        "tests/types/test_composite.py::test_dump_builtin_empty_range",
        "tests/types/test_composite.py::test_dump_no_sequence",
        "tests/types/test_composite.py::test_dump_no_sequence_failing",
        "tests/types/test_composite.py::test_dump_recursive_composite",
        "tests/types/test_composite.py::test_dump_tuple",
        "tests/types/test_composite.py::test_dump_tuple_null",
        "tests/types/test_composite.py::test_fetch_info",
        "tests/types/test_composite.py::test_fetch_info_async",
        "tests/types/test_composite.py::test_invalid_fields_names",
        "tests/types/test_composite.py::test_literal_invalid_attr",
        "tests/types/test_composite.py::test_literal_invalid_name",
        "tests/types/test_composite.py::test_load_composite",
        "tests/types/test_composite.py::test_load_composite_factory",
        "tests/types/test_composite.py::test_load_keyword_composite_factory",
        "tests/types/test_composite.py::test_load_recursive_composite",
        "tests/types/test_composite.py::test_register_scope",
        "tests/types/test_composite.py::test_type_dumper_registered",
        "tests/types/test_enum.py::test_enum_array_dumper",
        "tests/types/test_enum.py::test_enum_array_loader",
        "tests/types/test_enum.py::test_enum_dumper",
        "tests/types/test_enum.py::test_enum_dumper_nonascii",
        "tests/types/test_enum.py::test_enum_dumper_sqlascii",
        "tests/types/test_enum.py::test_enum_error",
        "tests/types/test_enum.py::test_enum_loader",
        "tests/types/test_enum.py::test_enum_loader_nonascii",
        "tests/types/test_enum.py::test_enum_loader_sqlascii",
        "tests/types/test_enum.py::test_enum_quoted_name",
        "tests/types/test_enum.py::test_fetch_info",
        "tests/types/test_enum.py::test_fetch_info_async",
        "tests/types/test_enum.py::test_generic_enum_array_loader",
        "tests/types/test_enum.py::test_register_makes_a_type",
        "tests/types/test_enum.py::test_remap",
        "tests/types/test_enum.py::test_remap_by_value",
        "tests/types/test_enum.py::test_remap_more_postgres",
        "tests/types/test_enum.py::test_remap_more_python",
        "tests/types/test_enum.py::test_remap_rename",
        "tests/types/test_hstore.py::test_register_conn",
        "tests/types/test_hstore.py::test_register_curs",
        "tests/types/test_hstore.py::test_roundtrip",
        "tests/types/test_hstore.py::test_roundtrip_array",
        "tests/types/test_multirange.py::test_dump_custom_empty",
        "tests/types/test_multirange.py::test_dump_custom_none",
        "tests/types/test_multirange.py::test_fetch_info",
        "tests/types/test_multirange.py::test_fetch_info_async",
        "tests/types/test_multirange.py::test_fetch_info_not_found",
        "tests/types/test_multirange.py::test_fetch_info_not_found_async",
        "tests/types/test_multirange.py::test_literal_invalid_name",
        "tests/types/test_multirange.py::test_load_custom_empty",
        "tests/types/test_numeric.py::test_load_int",
        "tests/types/test_range.py::test_dump_custom_empty",
        "tests/types/test_range.py::test_dump_custom_null",
        "tests/types/test_range.py::test_dump_quoting",
        "tests/types/test_range.py::test_fetch_info",
        "tests/types/test_range.py::test_fetch_info_async",
        "tests/types/test_range.py::test_fetch_info_not_found",
        "tests/types/test_range.py::test_fetch_info_not_found_async",
        "tests/types/test_range.py::test_literal_invalid_name",
        "tests/types/test_range.py::test_load_custom_empty",
        "tests/types/test_range.py::test_load_quoting",
    ],
    "R5": [
        "tests/test_copy.py::test_copy_bad_result",
        "tests/test_copy_async.py::test_copy_bad_result",
        "tests/test_cursor_common.py::test_stream_close",
        "tests/test_cursor_common_async.py::test_stream_close",
        "tests/test_pipeline.py::test_executemany_trace",
        "tests/test_pipeline.py::test_executemany_trace_returning",
        "tests/test_pipeline_async.py::test_executemany_trace",
        "tests/test_pipeline_async.py::test_executemany_trace_returning",
    ],
    "R7": [
        "tests/test_connection.py::test_right_exception_on_server_disconnect",
        "tests/test_connection_async.py::test_right_exception_on_server_disconnect",
    ],
    "R8DEL": [
        "tests/test_cursor_server.py::test_itersize",
        "tests/test_cursor_server_async.py::test_itersize",
        "tests/test_transaction.py::test_named_savepoints_exception_exit",
        "tests/test_transaction.py::test_named_savepoints_successful_exit",
        "tests/test_transaction_async.py::test_named_savepoints_exception_exit",
        "tests/test_transaction_async.py::test_named_savepoints_successful_exit",
    ],
    "PARAMS": [
        "tests/test_connection_info.py::test_get_params",
    ],
}

# in shared mode only: what an earlier test left on the one pooled connection
SHARED_ONLY: dict[str, list[str]] = {
    "R6": [
        "tests/test_transaction.py::test_begins_on_enter",
        "tests/test_transaction.py::test_cant_reenter",
        "tests/test_transaction.py::test_exposes_savepoint_name",
        "tests/test_transaction.py::test_named_savepoint_escapes_savepoint_name",
        "tests/test_transaction.py::test_out_of_order_exit",
        "tests/test_transaction.py::test_out_of_order_exit_same_name",
        "tests/test_transaction.py::test_preserves_autocommit",
        "tests/test_transaction.py::test_prohibits_use_of_commit_rollback_autocommit",
        "tests/test_transaction.py::test_str",
        "tests/test_transaction_async.py::test_autocommit_off_but_no_tx_started_exception_exit",
        "tests/test_transaction_async.py::test_autocommit_off_but_no_tx_started_successful_exit",
        "tests/test_transaction_async.py::test_begins_on_enter",
        "tests/test_transaction_async.py::test_cant_reenter",
        "tests/test_transaction_async.py::test_commit_on_successful_exit",
        "tests/test_transaction_async.py::test_explicit_rollback_discards_changes",
        "tests/test_transaction_async.py::test_explicit_rollback_of_enclosing_tx_outer_tx_unaffected",
        "tests/test_transaction_async.py::test_explicit_rollback_of_outer_transaction",
        "tests/test_transaction_async.py::test_explicit_rollback_outer_tx_unaffected",
        "tests/test_transaction_async.py::test_exposes_savepoint_name",
        "tests/test_transaction_async.py::test_force_rollback_exception_exit",
        "tests/test_transaction_async.py::test_force_rollback_successful_exit",
        "tests/test_transaction_async.py::test_named_savepoint_escapes_savepoint_name",
        "tests/test_transaction_async.py::test_named_savepoints_with_repeated_names_works",
        "tests/test_transaction_async.py::test_nested_all_changes_discarded_on_inner_exception",
        "tests/test_transaction_async.py::test_nested_all_changes_discarded_on_outer_exception",
        "tests/test_transaction_async.py::test_nested_all_changes_persisted_on_successful_exit",
        "tests/test_transaction_async.py::test_nested_inner_scope_exception_handled_in_outer_scope",
        "tests/test_transaction_async.py::test_nested_three_levels_successful_exit",
        "tests/test_transaction_async.py::test_out_of_order_exit",
        "tests/test_transaction_async.py::test_out_of_order_exit_same_name",
        "tests/test_transaction_async.py::test_preserves_autocommit",
        "tests/test_transaction_async.py::test_prohibits_use_of_commit_rollback_autocommit",
        "tests/test_transaction_async.py::test_rollback_on_exception_exit",
        "tests/test_transaction_async.py::test_str",
    ],
    "R8ADAPT": [
        "tests/test_adapt.py::test_cow_dumpers",
        "tests/test_adapt.py::test_dump_cursor_ctx",
        "tests/test_adapt.py::test_dump_subclass",
        "tests/test_adapt.py::test_dump_to_none",
        "tests/test_adapt.py::test_last_dumper_registered_ctx",
        "tests/test_adapt.py::test_register_dumper_by_class_name",
        "tests/test_adapt.py::test_return_untyped",
        "tests/test_adapt.py::test_str_list_dumper_text",
        "tests/test_rows.py::test_args_row",
        "tests/test_rows.py::test_class_row",
        "tests/test_rows.py::test_dict_row",
        "tests/test_rows.py::test_kwargs_row",
        "tests/test_rows.py::test_namedtuple_row",
        "tests/test_sql.py::TestLiteral::test_as_bytes",
        "tests/test_sql.py::TestLiteral::test_as_bytes_encoding",
        "tests/test_sql.py::TestLiteral::test_as_string",
        "tests/test_sql.py::TestSqlFormat::test_auto_literal",
        "tests/test_sql.py::TestSqlFormat::test_copy",
        "tests/test_sql.py::TestSqlFormat::test_execute",
        "tests/test_sql.py::TestSqlFormat::test_executemany",
        "tests/test_sql.py::test_quote_roundtrip",
        "tests/test_sql.py::test_quote_stable_despite_deranged_libpq",
        "tests/types/test_string.py::test_dump_text_oid",
    ],
    "R8HANDLERS": [
        "tests/test_notify.py::test_first_notify_not_lost",
        "tests/test_notify_async.py::test_first_notify_not_lost",
    ],
    "R8PATCH": [
        "tests/test_copy.py::test_copy_in_buffers",
        "tests/test_copy.py::test_copy_in_buffers_pg_error",
        "tests/test_copy.py::test_copy_out_badntypes",
        "tests/test_copy.py::test_copy_out_iter",
        "tests/test_copy.py::test_copy_out_no_result",
        "tests/test_copy.py::test_copy_out_param",
        "tests/test_copy.py::test_copy_out_read",
        "tests/test_copy.py::test_read_row_notypes",
        "tests/test_copy.py::test_read_rows",
        "tests/test_copy.py::test_rowlen_mismatch",
        "tests/test_copy.py::test_rows",
        "tests/test_copy.py::test_rows_notypes",
        "tests/test_copy.py::test_set_types",
        "tests/test_copy_async.py::test_copy_in_buffers",
        "tests/test_copy_async.py::test_copy_in_buffers_pg_error",
        "tests/test_copy_async.py::test_copy_out_badntypes",
        "tests/test_copy_async.py::test_copy_out_iter",
        "tests/test_copy_async.py::test_copy_out_no_result",
        "tests/test_copy_async.py::test_copy_out_param",
        "tests/test_copy_async.py::test_copy_out_read",
        "tests/test_copy_async.py::test_read_row_notypes",
        "tests/test_copy_async.py::test_read_rows",
        "tests/test_copy_async.py::test_rowlen_mismatch",
        "tests/test_copy_async.py::test_rows",
        "tests/test_copy_async.py::test_rows_notypes",
        "tests/test_copy_async.py::test_set_types",
        "tests/test_cursor_server.py::test_cant_scroll_by_default",
        "tests/test_cursor_server.py::test_hold",
        "tests/test_cursor_server.py::test_next",
        "tests/test_cursor_server.py::test_no_hold",
        "tests/test_cursor_server.py::test_non_scrollable",
        "tests/test_cursor_server.py::test_results_after_execute",
        "tests/test_cursor_server.py::test_row_maker_returns_none",
        "tests/test_cursor_server.py::test_scroll",
        "tests/test_cursor_server.py::test_scrollable",
        "tests/test_cursor_server.py::test_steal_cursor",
        "tests/test_cursor_server.py::test_stolen_cursor_close",
        "tests/test_cursor_server_async.py::test_cant_scroll_by_default",
        "tests/test_cursor_server_async.py::test_hold",
        "tests/test_cursor_server_async.py::test_next",
        "tests/test_cursor_server_async.py::test_no_hold",
        "tests/test_cursor_server_async.py::test_non_scrollable",
        "tests/test_cursor_server_async.py::test_results_after_execute",
        "tests/test_cursor_server_async.py::test_row_maker_returns_none",
        "tests/test_cursor_server_async.py::test_scroll",
        "tests/test_cursor_server_async.py::test_scrollable",
        "tests/test_cursor_server_async.py::test_steal_cursor",
        "tests/test_cursor_server_async.py::test_stolen_cursor_close",
        "tests/test_transaction.py::test_basic",
        "tests/test_transaction.py::test_out_of_order_implicit_begin",
        "tests/test_transaction_async.py::test_autocommit_off_and_tx_in_progress_exception_exit",
        "tests/test_transaction_async.py::test_autocommit_off_and_tx_in_progress_successful_exit",
        "tests/test_transaction_async.py::test_basic",
        "tests/test_transaction_async.py::test_interaction_dbapi_transaction",
        "tests/test_transaction_async.py::test_out_of_order_implicit_begin",
    ],
    "PREPARED": [
        "tests/test_prepared.py::test_evict_lru",
        "tests/test_prepared_async.py::test_evict_lru",
    ],
}


def expected_failures(mode: str) -> dict[str, str]:
    """Test function (node id without parameters) -> reason, for ``mode`` (fresh or shared)."""
    groups = [EVERY_MODE, SHARED_ONLY] if mode == "shared" else [EVERY_MODE]
    return {
        name: REASONS[key][1] for group in groups for key, names in group.items() for name in names
    }
