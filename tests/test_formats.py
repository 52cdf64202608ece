"""Readers (openai, xlam, sharegpt, chat), containers (JSONL, JSON array, Parquet, gzip) and auto-detection."""

from __future__ import annotations

import copy
import gzip
import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from toolcall_kit.errors import DataError
from toolcall_kit.formats import RowError, converter, detect_format, read_file, xlam
from toolcall_kit.formats import openai as openai_fmt
from toolcall_kit.records import classify, make_call, make_tool, to_openai
from toolcall_kit.validate import validate_record

DATA = Path(__file__).parent / "data"


def rows(path, fmt="auto"):
    info: dict = {}
    out = list(read_file(path, fmt, info))
    return out, info


def records(path, fmt="auto"):
    out, _ = rows(path, fmt)
    assert all(r.problem is None for r in out), [r.problem for r in out]
    return [r.record for r in out]


# ---------------------------------------------------------------- openai


def test_openai_good_file_converts_every_row_and_validates():
    recs = records(DATA / "openai_good.jsonl")
    assert [classify(r) for r in recs] == [
        "single_call",
        "parallel_calls",
        "multi_step",
        "no_call",
        "declined",
        "single_call",
    ]
    assert all(validate_record(r) == [] for r in recs)
    # arguments decoded to objects
    assert recs[0]["messages"][2]["tool_calls"][0]["function"]["arguments"] == {"city": "Paris"}
    # parallel_tool_calls and weights kept
    assert recs[1]["parallel_tool_calls"] is True and recs[1]["messages"][1]["weight"] == 1
    assert recs[2]["messages"][3]["weight"] == 0
    # content given as text parts is joined
    assert recs[2]["messages"][0]["content"] == "Is it warm in Rome?"
    # a tool message without `name` gets it from its call
    assert recs[2]["messages"][2] == {
        "role": "tool",
        "tool_call_id": "call_1",
        "name": "get_weather",
        "content": '{"temp_c": 24}',
    }
    assert recs[4]["kind"] == "declined"


def test_openai_legacy_functions_become_tools_calls_and_tool_messages():
    legacy = records(DATA / "openai_good.jsonl")[5]
    assert [t["function"]["name"] for t in legacy["tools"]] == ["get_weather"]
    assert legacy["tools"][0]["type"] == "function"
    call = legacy["messages"][1]["tool_calls"][0]
    assert call["function"] == {"name": "get_weather", "arguments": {"city": "Lima"}}
    assert call["id"].startswith("call_")
    assert legacy["messages"][2] == {
        "role": "tool",
        "tool_call_id": call["id"],
        "name": "get_weather",
        "content": '{"temp_c": 17}',
    }
    assert "function_call" not in legacy["messages"][1] and "functions" not in legacy


def test_openai_generated_ids_avoid_existing_ones_and_results_match_by_name():
    row = {
        "tools": [make_tool("a"), make_tool("b")],
        "messages": [
            {"role": "user", "content": "go"},
            {"role": "assistant", "tool_calls": [
                {"type": "function", "function": {"name": "a", "arguments": "{}"}},
                {"id": "call_0", "type": "function", "function": {"name": "b", "arguments": "{}"}},
            ]},
            {"role": "tool", "name": "b", "content": "B"},
            {"role": "tool", "content": "A"},
            {"role": "assistant", "content": "done"},
        ],
    }  # fmt: skip
    rec = openai_fmt.convert(row)
    ids = [c["id"] for c in rec["messages"][1]["tool_calls"]]
    assert ids == ["call_1", "call_0"]
    assert rec["messages"][2]["tool_call_id"] == "call_0" and rec["messages"][2]["name"] == "b"
    assert rec["messages"][3]["tool_call_id"] == "call_1" and rec["messages"][3]["name"] == "a"
    assert validate_record(rec) == []


@pytest.mark.parametrize(
    "arguments, expected",
    [
        ('{"city": "Paris"}', {"city": "Paris"}),
        ('"{\\"city\\": \\"Paris\\"}"', {"city": "Paris"}),
        ("", {}),
        (None, {}),
        ({"a": 1}, {"a": 1}),
    ],
)
def test_openai_arguments_are_decoded(arguments, expected):
    row = {
        "messages": [
            {
                "role": "assistant",
                "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": arguments}}],
            }
        ]
    }
    assert openai_fmt.convert(row)["messages"][0]["tool_calls"][0]["function"]["arguments"] == expected


def test_openai_undecodable_arguments_are_a_row_error():
    row = {
        "messages": [
            {
                "role": "assistant",
                "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{city: 1}"}}],
            }
        ]
    }
    with pytest.raises(RowError) as e:
        openai_fmt.convert(row)
    assert (
        e.value.problem.reason == "arguments_not_object"
        and "messages[0].tool_calls[0]" in e.value.problem.detail
    )


def test_openai_tool_result_given_as_an_object_becomes_json_text():
    row = {"tools": [make_tool("f")], "messages": [
        {"role": "user", "content": "go"},
        {"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c", "content": {"ok": True}},
    ]}  # fmt: skip
    assert openai_fmt.convert(row)["messages"][2]["content"] == '{"ok": true}'


def test_openai_non_text_content_part_is_a_row_error():
    row = {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}
    with pytest.raises(RowError) as e:
        openai_fmt.convert(row)
    assert e.value.problem.reason == "bad_field"


CANONICAL = [
    {
        "id": "ex-1",
        "kind": "multi_step",
        "parallel_tool_calls": False,
        "tools": [make_tool("get_weather", "Weather.", {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})],
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Weather in Paris and then Nice?"},
            {"role": "assistant", "content": None, "weight": 1, "tool_calls": [make_call("get_weather", {"city": "Paris"}, "call_1")]},
            {"role": "tool", "tool_call_id": "call_1", "name": "get_weather", "content": '{"temp_c": 18}'},
            {"role": "assistant", "content": "Checking Nice.", "tool_calls": [make_call("get_weather", {"city": "Nice"}, "call_2")]},
            {"role": "tool", "tool_call_id": "call_2", "name": "get_weather", "content": '{"temp_c": 20}'},
            {"role": "assistant", "content": "18 C and 20 C.", "weight": 0},
        ],
    },
    {"messages": [{"role": "user", "content": "hi é ✓"}, {"role": "assistant", "content": "hello"}]},
]  # fmt: skip


@pytest.mark.parametrize("record", CANONICAL + records(DATA / "openai_good.jsonl"))
def test_canonical_record_round_trips_through_openai_format(record, tmp_path):
    original = copy.deepcopy(record)
    line = json.dumps(to_openai(record))
    for call in json.loads(line)["messages"][-1].get("tool_calls") or []:
        assert isinstance(call["function"]["arguments"], str)  # really the OpenAI form on disk
    path = tmp_path / "rt.jsonl"
    path.write_text(line + "\n")
    (back,) = records(path, "openai")
    assert back == original
    assert record == original  # to_openai did not touch its input


@settings(max_examples=60, deadline=None)
@given(
    args=st.dictionaries(
        st.text(min_size=1, max_size=8),
        st.recursive(
            st.none()
            | st.booleans()
            | st.integers()
            | st.floats(allow_nan=False, allow_infinity=False)
            | st.text(max_size=10),
            lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=5), kids, max_size=3),
            max_leaves=8,
        ),
        max_size=4,
    ),
    text=st.text(max_size=30),
)
def test_round_trip_property(args, text):
    record = {
        "tools": [make_tool("f")],
        "messages": [
            {"role": "user", "content": text},
            {"role": "assistant", "content": None, "tool_calls": [make_call("f", args, "c0")]},
        ],
    }
    assert openai_fmt.convert(json.loads(json.dumps(to_openai(record)))) == record


# ---------------------------------------------------------------- xlam


@pytest.mark.parametrize(
    "text, schema, optional",
    [
        ("str", {"type": "string"}, False),
        ("str, optional", {"type": "string"}, True),
        ("int", {"type": "integer"}, False),
        ("float", {"type": "number"}, False),
        ("bool", {"type": "boolean"}, False),
        ("int, default=5", {"type": "integer"}, True),
        ("List[int]", {"type": "array", "items": {"type": "integer"}}, False),
        (
            "List[Dict[str, str]]",
            {"type": "array", "items": {"type": "object", "additionalProperties": {"type": "string"}}},
            False,
        ),
        ("Dict[str, Any]", {"type": "object"}, False),
        ("Tuple", {"type": "array"}, False),
        ("Tuple[int, int]", {"type": "array", "items": {"type": "integer"}}, False),
        ("Tuple[float, ...]", {"type": "array", "items": {"type": "number"}}, False),
        ("Set[str], optional", {"type": "array", "items": {"type": "string"}}, True),
        ("list", {"type": "array"}, False),
        ("dict", {"type": "object"}, False),
        ("Any", {}, False),
        ("Callable", {}, False),
        ("datetime.date", {}, False),
        ("Optional[int]", {"type": ["integer", "null"]}, True),
        ("Union[int, float]", {"type": ["integer", "number"]}, False),
        ("str | None", {"type": ["string", "null"]}, False),
        ("Literal['a', 'b']", {"enum": ["a", "b"]}, False),
        ("int (optional)", {"type": "integer"}, True),
    ],
)
def test_xlam_python_types_become_json_schema(text, schema, optional):
    got, opt, _ = xlam.python_type_schema(text)
    assert got == schema and opt == optional


def test_xlam_default_in_the_type_text_is_kept():
    assert xlam.python_type_schema("float, optional, default=0.5")[2] == 0.5
    assert xlam.python_type_schema("str, default='en'")[2] == "en"


def test_xlam_required_means_not_optional_and_no_default():
    schema = xlam.parameters_schema({
        "a": {"type": "str", "description": "A"},
        "b": {"type": "str, optional"},
        "c": {"type": "int", "default": 3},
        "d": {"type": "int, default=5"},
        "e": {"type": "List[int]", "required": True},
        "f": {"type": "str", "required": False},
    })  # fmt: skip
    assert schema["required"] == ["a", "e"]
    assert schema["properties"]["a"] == {"type": "string", "description": "A"}
    assert schema["properties"]["c"]["default"] == 3 and schema["properties"]["d"]["default"] == 5


def test_xlam_file_converts_rows_and_rejects_bad_ones():
    out, info = rows(DATA / "xlam.json")
    assert info["format"] == "xlam" and [r.line for r in out] == list(range(1, 9))
    good = [r.record for r in out[:4]]
    assert all(validate_record(r) == [] for r in good)
    first = good[0]
    assert [m["role"] for m in first["messages"]] == ["user", "assistant"]
    assert [c["id"] for c in first["messages"][1]["tool_calls"]] == ["call_0", "call_1"]
    assert classify(first) == "parallel_calls" and classify(good[1]) == "single_call"
    params = good[2]["tools"][0]["function"]["parameters"]
    assert params["required"] == ["numbers"] and params["properties"]["numbers"]["items"] == {
        "type": "number"
    }
    reasons = [r.problem.reason if r.problem else validate_record(r.record)[0].reason for r in out[4:]]
    assert reasons == ["arguments_schema", "arguments_schema", "no_assistant", "undeclared_tool"]


def test_xlam_records_do_not_share_schema_objects():
    row = {
        "query": "q",
        "tools": [{"name": "f", "parameters": {"x": {"type": "List[int]"}}}],
        "answers": [{"name": "f", "arguments": {"x": [1]}}],
    }
    a, b = xlam.convert(copy.deepcopy(row)), xlam.convert(copy.deepcopy(row))
    a["tools"][0]["function"]["parameters"]["properties"]["x"]["items"]["type"] = "string"
    assert b["tools"][0]["function"]["parameters"]["properties"]["x"]["items"] == {"type": "integer"}


@pytest.mark.parametrize(
    "row, reason",
    [
        ({"tools": "[]", "answers": "[]"}, "missing_field"),
        ({"query": "q", "tools": "[", "answers": "[]"}, "bad_field"),
        ({"query": "q", "tools": "[]", "answers": "{}"}, "bad_field"),
        ({"query": "q", "tools": "[]"}, "missing_field"),
        ({"query": "q", "tools": "[5]", "answers": '[{"name": "f"}]'}, "bad_tool"),
        ({"query": "q", "tools": "[]", "answers": "[5]"}, "bad_field"),
    ],
)
def test_xlam_malformed_rows_are_row_errors(row, reason):
    with pytest.raises(RowError) as e:
        xlam.convert(row)
    assert e.value.problem.reason == reason


# ---------------------------------------------------------------- sharegpt


def test_sharegpt_hermes_tools_calls_and_responses():
    out, info = rows(DATA / "sharegpt.jsonl")
    assert info["format"] == "sharegpt"
    hermes = out[0].record
    assert validate_record(hermes) == []
    assert [t["function"]["name"] for t in hermes["tools"]] == ["get_stock_price"]
    assert hermes["messages"][0]["role"] == "user"  # the Hermes tool boilerplate system turn is dropped
    calls = hermes["messages"][1]["tool_calls"]
    assert [c["function"]["arguments"] for c in calls] == [
        {"symbol": "AAPL"},
        {"symbol": "MSFT"},
    ]  # JSON and Python-literal
    assert hermes["messages"][1]["content"] is None
    assert [(m["tool_call_id"], m["name"]) for m in hermes["messages"][2:4]] == [
        (calls[0]["id"], "get_stock_price"),
        (calls[1]["id"], "get_stock_price"),
    ]
    assert '"price": 190.1' in hermes["messages"][2]["content"]


def test_sharegpt_llama_factory_style_and_plain_chat():
    out, _ = rows(DATA / "sharegpt.jsonl")
    lf = out[1].record
    assert validate_record(lf) == []
    assert lf["tools"][0]["function"]["name"] == "convert_currency"
    assert lf["messages"][1]["tool_calls"][0]["function"]["arguments"] == {
        "amount": 100,
        "from": "USD",
        "to": "EUR",
    }
    assert (
        lf["messages"][2]["role"] == "tool"
        and lf["messages"][2]["tool_call_id"] == lf["messages"][1]["tool_calls"][0]["id"]
    )
    plain = out[2].record
    assert plain == {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Capital of France?"},
            {"role": "assistant", "content": "Paris."},
        ]
    }


def test_sharegpt_broken_rows():
    out, _ = rows(DATA / "sharegpt.jsonl")
    assert out[3].problem.reason == "bad_field" and "</tool_call>" in out[3].problem.detail
    assert [p.reason for p in validate_record(out[4].record)] == ["unknown_role"]
    assert [p.reason for p in validate_record(out[5].record)] == ["orphan_tool_result"]


def test_sharegpt_shares_the_one_hermes_reader():
    from toolcall_kit import templates
    from toolcall_kit.formats import sharegpt

    assert sharegpt.hermes_blocks is templates.hermes_blocks  # no second <tool_call> reader
    turn = (
        'Checking.\n<tool_call>\n{"name": "a", "arguments": {"x": 1}}\n</tool_call>\n'
        '<tool_call>\n{"name": "b", "arguments": {}}\n</tool_call>'
    )
    row = {"conversations": [{"from": "human", "value": "go"}, {"from": "gpt", "value": turn}]}
    msg = converter("sharegpt")(row)["messages"][1]
    parsed = templates.parse_tool_calls(turn, "hermes")
    assert [(c["function"]["name"], c["function"]["arguments"]) for c in msg["tool_calls"]] == parsed.pairs()
    assert msg["content"] == parsed.content == "Checking."
    # lenient only where data sources need it: a Python literal, which a server could not read
    lit = "<tool_call>{'name': 'a', 'arguments': {'x': 1}}</tool_call>"
    row["conversations"][1]["value"] = lit
    (call,) = converter("sharegpt")(row)["messages"][1]["tool_calls"]
    assert call["function"]["arguments"] == {"x": 1} and templates.parse_tool_calls(lit, "hermes").calls == []


def test_sharegpt_results_match_calls_by_the_name_they_carry():
    row = {"tools": [make_tool("a"), make_tool("b")], "conversations": [
        {"from": "human", "value": "go"},
        {"from": "gpt", "value": 'Sure.\n<tool_call>{"name": "a", "arguments": {}}</tool_call><tool_call>{"name": "b", "arguments": "{}"}</tool_call>'},
        {"from": "tool", "value": '<tool_response>{"name": "b", "content": 2}</tool_response><tool_response>{"name": "a", "content": 1}</tool_response>'},
        {"from": "gpt", "value": "a=1, b=2"},
    ]}  # fmt: skip
    rec = converter("sharegpt")(row)
    assert rec["messages"][1]["content"] == "Sure."
    ids = {c["function"]["name"]: c["id"] for c in rec["messages"][1]["tool_calls"]}
    assert [(m["name"], m["tool_call_id"]) for m in rec["messages"][2:4]] == [
        ("b", ids["b"]),
        ("a", ids["a"]),
    ]
    assert validate_record(rec) == []


def test_sharegpt_tools_written_back_to_back_in_the_system_turn():
    system = '<tools>\n{"name": "a", "parameters": {"type": "object"}}\n{"name": "b"}\n</tools>'
    row = {
        "conversations": [
            {"from": "system", "value": system},
            {"from": "human", "value": "x"},
            {"from": "gpt", "value": "y"},
        ]
    }
    rec = converter("sharegpt")(row)
    assert [t["function"]["name"] for t in rec["tools"]] == ["a", "b"]


# ---------------------------------------------------------------- chat


def test_chat_file():
    out, info = rows(DATA / "chat.jsonl")
    assert info["format"] == "chat"
    assert out[0].record == {"messages": [
        {"role": "user", "content": "Explain rainbows."},
        {"role": "assistant", "content": "Sunlight is refracted, reflected and dispersed in raindrops."},
        {"role": "user", "content": "Why curved?"},
        {"role": "assistant", "content": "Each color leaves the drops at a fixed angle, about 42 degrees."},
    ]}  # fmt: skip
    assert out[1].record["messages"] == [
        {"role": "user", "content": "Say hi in French."},
        {"role": "assistant", "content": "Bonjour !"},
    ]
    assert out[2].record["messages"] == [
        {"role": "user", "content": "What is 2 + 2?"},
        {"role": "assistant", "content": "4."},
    ]
    assert all(validate_record(r.record) == [] for r in out[:3])
    assert [p.reason for p in validate_record(out[3].record)] == ["empty_assistant"]


@pytest.mark.parametrize(
    "row",
    [
        {"tools": [make_tool("f")], "messages": [{"role": "user", "content": "x"}]},
        {"messages": [{"role": "assistant", "tool_calls": [{"id": "c"}]}]},
        {"messages": [{"role": "tool", "content": "x"}]},
        {"prompt": "no messages here"},
    ],
)
def test_chat_rejects_tool_rows_and_rows_without_turns(row):
    with pytest.raises(RowError):
        converter("chat")(row)


# ---------------------------------------------------------------- detection


@pytest.mark.parametrize(
    "sample, fmt",
    [
        ([{"query": "q", "tools": "[]", "answers": "[]"}], "xlam"),
        ([{"messages": [{"role": "user", "content": "x"}]}], "chat"),
        (
            [
                {"messages": [{"role": "user", "content": "x"}]},
                {"messages": [], "tools": []},
                {"messages": [], "tools": [1]},
            ],
            "openai",
        ),
        ([{"messages": [{"role": "tool", "content": "x"}]}], "openai"),
        ([{"conversations": [{"from": "human", "value": "x"}]}], "chat"),
        (
            [
                {"conversations": [{"from": "human", "value": "x"}]},
                {"conversations": [{"from": "gpt", "value": "<tool_call>{}</tool_call>"}]},
            ],
            "sharegpt",
        ),
        ([{"conversations": [{"from": "function_call", "value": "{}"}]}], "sharegpt"),
        ([{"data": ["a", "b"]}], "chat"),
        ([1, "x", {"other": 1}], "openai"),
        ([], "openai"),
    ],
)
def test_detect_format(sample, fmt):
    got, how = detect_format("f.jsonl", sample)
    assert got == fmt and how.startswith("auto: ")


def test_detect_format_says_when_a_file_is_mixed():
    fmt, how = detect_format("f", [{"query": 1, "answers": 1}] * 3 + [{"messages": [], "tools": [1]}])
    assert fmt == "xlam" and "mixed" in how and "1 like openai" in how


def test_explicit_format_is_used_and_unknown_format_refused():
    out, info = rows(DATA / "chat.jsonl", "openai")
    assert info == {"format": "openai", "how": "given: --format openai"}
    assert out[0].problem is None  # the openai reader reads plain messages rows too
    assert out[1].problem.reason == "missing_field"  # but not `conversations`
    with pytest.raises(ValueError):
        list(read_file(DATA / "chat.jsonl", "csv"))


# ---------------------------------------------------------------- containers


def test_gzip_jsonl_and_gzip_json_array_read_like_the_plain_files(tmp_path):
    for name in ("openai_good.jsonl", "xlam.json"):
        gz = tmp_path / (name + ".gz")
        gz.write_bytes(gzip.compress((DATA / name).read_bytes()))
        plain, gzipped = rows(DATA / name), rows(gz)
        assert [r.record for r in gzipped[0]] == [r.record for r in plain[0]]
        assert [r.line for r in gzipped[0]] == [r.line for r in plain[0]]
        assert gzipped[1]["format"] == plain[1]["format"]


def test_gzip_is_found_by_its_magic_bytes_not_its_name(tmp_path):
    p = tmp_path / "data.jsonl"
    p.write_bytes(gzip.compress((DATA / "chat.jsonl").read_bytes()))
    assert len(records(p)[:3]) == 3


def test_parquet_with_string_columns(tmp_path):
    data = json.loads((DATA / "xlam.json").read_text())
    path = tmp_path / "xlam.parquet"
    pq.write_table(pa.Table.from_pylist(data), path)
    out, info = rows(path)
    assert info["format"] == "xlam"
    assert [r.line for r in out] == list(range(1, 9))
    assert [r.record for r in out[:4]] == [r.record for r in rows(DATA / "xlam.json")[0][:4]]
    assert json.loads(out[0].raw)["query"] == data[0]["query"]


def test_parquet_with_struct_columns_drops_the_nulls_arrow_adds(tmp_path):
    recs = records(DATA / "openai_good.jsonl")[:3]
    as_openai = [to_openai(r) for r in recs]
    path = tmp_path / "openai.parquet"
    pq.write_table(
        pa.Table.from_struct_array(pa.array(as_openai)), path
    )  # from_pylist keeps row 0's keys only
    # Arrow unified the structs: a user message now carries tool_calls=None, a tool's schema other tools' fields.
    assert pq.read_table(path).to_pylist()[0]["messages"][0]["tool_calls"] is None
    assert records(path) == recs


def test_json_lines_under_a_json_name_and_a_single_object(tmp_path):
    p = tmp_path / "bfcl_style.json"
    shutil.copy(DATA / "chat.jsonl", p)
    assert len(rows(p)[0]) == 4
    one = tmp_path / "one.json"
    one.write_text(
        json.dumps(
            {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}, indent=2
        )
    )
    (row,), _ = rows(one)
    assert row.line == 1 and validate_record(row.record) == []


def test_jsonl_line_numbers_blank_lines_bom_and_bad_lines(tmp_path):
    good = json.dumps({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]})
    p = tmp_path / "mixed.jsonl"
    p.write_bytes(
        b"\xef\xbb\xbf"
        + good.encode()
        + b"\n\n   \n"
        + b"\xff\xfe not utf8\n"
        + b'{"a": NaN}\n'
        + b"[" * 100000
        + b"\n"
        + b"42\r\n"
        + good.encode()
    )
    out, _ = rows(p)
    assert [r.line for r in out] == [1, 4, 5, 6, 7, 8]
    assert out[0].problem is None and out[-1].problem is None
    assert [r.problem.reason for r in out[1:5]] == [
        "invalid_json",
        "invalid_json",
        "invalid_json",
        "not_object",
    ]
    assert "UTF-8" in out[1].problem.detail and "NaN" in out[2].problem.detail
    assert out[4].raw == "42"


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("x.jsonl.gz", b"not gzip at all", "not a gzip file"),
        ("x.jsonl.gz", gzip.compress(b'{"a": 1}\n' * 100)[:-20], "corrupt gzip"),
        ("x.parquet", b"PAR1 garbage PAR1", "Parquet"),
        ("x.parquet", b"hello", "not a Parquet file"),
        ("x.json", b'[\n {"a": 1},\n {"a": 2\n]\n', "not a valid JSON array"),
        ("x.json", b'[{"a": NaN}]', "not a valid JSON array"),
    ],
)
def test_unreadable_files_raise_data_error_naming_the_file(tmp_path, name, content, message):
    p = tmp_path / name
    p.write_bytes(content)
    with pytest.raises(DataError) as e:
        list(read_file(p))
    assert message in str(e.value) and str(p) in str(e.value)


def test_missing_file_and_folder_raise_data_error(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        list(read_file(tmp_path / "nope.jsonl"))
    with pytest.raises(DataError, match="folder"):
        list(read_file(tmp_path))


def test_parquet_values_json_has_no_form_for_become_strings_or_null(tmp_path):
    import datetime

    table = pa.table({
        "messages": [[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]],
        "created": pa.array([datetime.datetime(2026, 1, 2, 3, 4, 5)], pa.timestamp("s")),
        "score": [float("nan")],
        "blob": [b"\x00\x01"],
    })  # fmt: skip
    path = tmp_path / "odd.parquet"
    pq.write_table(table, path)
    (row,), info = rows(path)
    assert info["format"] == "chat"
    assert row.record == {
        "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    }
    raw = json.loads(row.raw)
    assert raw["created"] == "2026-01-02 03:04:05" and "score" not in raw and isinstance(raw["blob"], str)
