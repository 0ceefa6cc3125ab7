"""WeChat's keyword rules: the same answers for Herald's pre-send check and the sandbox's 47003."""

import pickle
import re
from decimal import Decimal

import pytest

from keywords import KEY_RE, KEYWORD_TYPES, RULES, KeywordError, check_value, keyword_type

ALL_TYPES = [
    "enum",  # values from the template's keywordEnumValueList
    "thing",
    "number",
    "letter",
    "symbol",
    "character_string",
    "time",
    "date",
    "amount",
    "phone_number",
    "car_number",
    "name",
    "phrase",
]


def ok(key: str, value: object, *, truncate: bool = True) -> str:
    """The value check_value would send, asserting it was sent whole."""
    sent, truncated = check_value(key, value, truncate=truncate)
    assert truncated is False
    return sent


# --- the public surface --------------------------------------------------------------------


def test_keyword_types_are_the_thirteen_documented_ones() -> None:
    assert KEYWORD_TYPES == frozenset(ALL_TYPES)
    assert len(KEYWORD_TYPES) == 13


def test_enum_values_must_be_one_of_the_templates_list() -> None:
    assert check_value("enum4", " 已发货 ", choices=("待发货", "已发货")) == ("已发货", False)
    with pytest.raises(KeywordError) as caught:
        check_value("enum4", "已签收", choices=("待发货", "已发货"))
    assert "enum4: '已签收' is not a valid enum: not one of '待发货', '已发货'" in str(caught.value)
    # without the list (not pulled from WeChat) any value goes and WeChat has the last word
    assert check_value("enum4", "已签收") == ("已签收", False)


def test_every_type_has_a_one_line_rule() -> None:
    assert set(RULES) == KEYWORD_TYPES
    for rule in RULES.values():
        assert rule and "\n" not in rule


def test_key_re_is_the_documented_pattern() -> None:
    assert KEY_RE.pattern == r"^([a-z_]+?)(\d+)$"


def test_keyword_error_is_a_value_error_and_survives_pickling() -> None:
    with pytest.raises(KeywordError) as caught:
        check_value("amount3", "12,5x")
    error = caught.value
    assert isinstance(error, ValueError)
    assert (error.key, error.value) == ("amount3", "12,5x")
    copy = pickle.loads(pickle.dumps(error))
    assert (str(copy), copy.key, copy.value) == (str(error), "amount3", "12,5x")


# --- keys ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ALL_TYPES)
def test_every_type_parses_from_its_key(kind: str) -> None:
    assert keyword_type(f"{kind}1") == kind
    assert keyword_type(f"{kind}27") == kind


@pytest.mark.parametrize(
    ("key", "kind"),
    [
        ("thing2", "thing"),
        ("character_string8", "character_string"),
        ("phone_number4", "phone_number"),
        ("car_number1", "car_number"),
        ("number10", "number"),
        ("time01", "time"),
    ],
)
def test_key_regex_splits_type_from_number(key: str, kind: str) -> None:
    # The lazy +? must not stop early on an underscore type such as character_string.
    match = KEY_RE.match(key)
    assert match is not None
    assert match.group(1) == kind
    assert keyword_type(key) == kind


@pytest.mark.parametrize(
    "key",
    [
        "thing",
        "2thing",
        "Thing2",
        "foo3",
        "",
        "thing2x",
        "thing 2",
        "thing2\n",
        "character_string",
        "thing_2",
        "thing٢",  # an Arabic-Indic digit two: not a digit WeChat knows
    ],
)
def test_bad_keys_are_refused(key: str) -> None:
    with pytest.raises(KeywordError) as caught:
        keyword_type(key)
    message = str(caught.value)
    assert message.startswith(f"data key {key!r} does not name a keyword type")
    assert "expected <type><number>, e.g. thing2" in message
    assert "types: amount, car_number, character_string, date," in message
    assert caught.value.key == key
    assert caught.value.value is None


def test_check_value_refuses_a_bad_key_before_looking_at_the_value() -> None:
    with pytest.raises(KeywordError, match="data key 'foo3' does not name a keyword type"):
        check_value("foo3", "anything")


# --- every type: valid and invalid values ---------------------------------------------------

VALID = [
    ("thing", "订单已发货"),
    ("thing", "Order 12 has shipped"),
    ("thing", "a"),
    ("thing", "x" * 20),
    ("thing", "满100减20, 今晚8点!"),
    ("number", "0"),
    ("number", "42"),
    ("number", "-3.14"),
    ("number", "+7"),
    ("number", "1" * 32),
    ("number", "-" + "1" * 16 + "." + "2" * 16),
    ("letter", "a"),
    ("letter", "ABCxyz"),
    ("letter", "Z" * 32),
    ("symbol", "!"),
    ("symbol", "¥%#@&"),
    ("symbol", "★→…"),
    ("symbol", "👍"),
    ("character_string", "ORD-2026-000123"),
    ("character_string", "a_b.c/d#1"),
    ("character_string", "X" * 32),
    ("character_string", "7"),
    ("time", "15:01"),
    ("time", "00:00"),
    ("time", "23:59:59"),
    ("time", "9:05"),
    ("time", "2026-11-28 10:00"),
    ("time", "2026/1/2 08:30:15"),
    ("time", "2026.11.28 23:00"),
    ("time", "2026年11月28日 15:01"),
    ("time", "2026年11月28日15:01"),
    ("time", "10:00~12:00"),
    ("time", "10:00 ~ 12:00"),
    ("time", "2026-11-28 10:00~2026-11-28 12:00"),
    ("time", "2026-11-28 10:00~12:00"),
    ("date", "2026-11-28"),
    ("date", "2026/11/28"),
    ("date", "2026.11.28"),
    ("date", "2026-1-5"),
    ("date", "2026年11月28日"),
    ("date", "2026年1月5日"),
    ("date", "2028-02-29"),
    ("date", "2026-11-28 10:00"),
    ("date", "2026年11月28日 15:01"),
    ("date", "2026年11月28日15:01:30"),
    ("date", "2026-11-28~2026-11-30"),
    ("date", "2026-11-28 10:00~2026-11-28 12:00"),
    ("amount", "100"),
    ("amount", "¥12.50"),
    ("amount", "￥12.5"),
    ("amount", "12.5元"),
    ("amount", "¥12元"),
    ("amount", "$1000000000"),
    ("amount", "€0.99"),
    ("amount", "£3"),
    ("amount", "99999999.99"),
    ("phone_number", "+86-0766-66888866"),
    ("phone_number", "13800138000"),
    ("phone_number", "(0766) 6688 8866"),
    ("phone_number", "1"),
    ("phone_number", "+" + "1" * 16),
    ("car_number", "粤A8Z888挂"),
    ("car_number", "京A12345"),
    ("car_number", "粤B12345D"),
    ("car_number", "A12345"),
    ("car_number", "ab12cd34"),
    ("name", "张三"),
    ("name", "欧阳娜娜"),
    ("name", "阿卜杜·热合曼"),
    ("name", "Jane Doe"),
    ("name", "O'Brien-Smith"),
    ("name", "张San"),
    ("name", "张" * 10),
    ("name", "J" * 20),
    ("phrase", "配送中"),
    ("phrase", "已"),
    ("phrase", "待支付订单"),
]

INVALID = [
    ("number", "12,5"),
    ("number", "1.2.3"),
    ("number", "--1"),
    ("number", "1e5"),
    ("number", "1."),
    ("number", ".5"),
    ("number", "5-"),
    ("number", "１２"),  # full-width digits
    ("number", "1" * 33),
    ("number", "1" * 20 + "." + "1" * 13),
    ("number", "12 34"),
    ("letter", "abc1"),
    ("letter", "héllo"),
    ("letter", "two words"),
    ("letter", "a" * 33),
    ("letter", "ａ"),  # full-width a
    ("symbol", "a!"),
    ("symbol", "!!!!!!"),
    ("symbol", "! !"),
    ("symbol", "1"),
    ("character_string", "has space"),
    ("character_string", "订单123"),
    ("character_string", "X" * 33),
    ("character_string", "٣"),  # a digit, but not an ASCII one
    ("time", "24:00"),
    ("time", "12:60"),
    ("time", "12:30:60"),
    ("time", "1230"),
    ("time", "12:3"),
    ("time", "123:00"),
    ("time", "2026-11-28"),
    ("time", "10:00~"),
    ("time", "~10:00"),
    ("time", "10:00~11:00~12:00"),
    ("time", "10:00-12:00"),
    ("time", "2026-11-2810:00"),
    ("time", "2026-11-28  10:00"),
    ("time", "下午3点"),
    ("time", "2026-02-30 10:00"),
    ("date", "2026-02-30"),
    ("date", "2027-02-29"),
    ("date", "2026-13-01"),
    ("date", "2026-00-10"),
    ("date", "0000-01-01"),
    ("date", "2026-11/28"),
    ("date", "26-11-28"),
    ("date", "2026-11-28T10:00"),
    ("date", "2026-11-28 25:00"),
    ("date", "2026年11月28"),
    ("date", "2026年2月30日"),
    ("date", "10:00"),
    ("date", "2026-11-28 10:00~12:00"),
    ("date", "2026-11-28~"),
    ("date", "tomorrow"),
    ("amount", "12,5x"),
    ("amount", "12345678901"),
    ("amount", "1234567890.5"),
    ("amount", "12.345"),
    ("amount", "-5"),
    ("amount", "¥¥5"),
    ("amount", "5¥"),
    ("amount", "¥ 5"),
    ("amount", "12元5"),
    ("amount", "1,000"),
    ("amount", "12."),
    ("amount", "元"),
    ("amount", "USD5"),
    ("phone_number", "call me"),
    ("phone_number", "+86 138 0013 8000 ext"),
    ("phone_number", "+-()"),
    ("phone_number", "1" * 18),
    ("phone_number", "+86-0766-668888661"),
    ("car_number", "粤A8Z888挂1"),
    ("car_number", "粤挂"),
    ("car_number", "A粤1"),
    ("car_number", "粤A 12345"),
    ("car_number", "粤A-12345"),
    ("car_number", "A12345678"),
    ("name", "R2D2"),
    ("name", "Zoë"),
    ("name", "Иван"),
    ("phrase", "配送中ing"),
    ("phrase", "配送 中"),
    ("phrase", "配送中。"),
    ("phrase", "待支付订单了"),
    ("phrase", "OK"),
]


@pytest.mark.parametrize(("kind", "value"), VALID)
def test_valid_values_are_sent_as_given(kind: str, value: str) -> None:
    assert ok(f"{kind}1", value) == value
    assert ok(f"{kind}1", value, truncate=False) == value


@pytest.mark.parametrize(("kind", "value"), INVALID)
def test_invalid_values_are_refused_with_key_value_and_rule(kind: str, value: str) -> None:
    key = f"{kind}7"
    with pytest.raises(KeywordError) as caught:
        check_value(key, value)
    message = str(caught.value)
    assert message.startswith(f"{key}: {value!r} is not a valid {kind}")
    assert message.endswith(f"({RULES[kind]})")
    assert caught.value.key == key
    assert caught.value.value == value


@pytest.mark.parametrize(("kind", "value"), INVALID)
def test_invalid_values_stay_invalid_without_truncation(kind: str, value: str) -> None:
    # The sandbox's view must never accept what Herald's own check refuses.
    with pytest.raises(KeywordError):
        check_value(f"{kind}7", value, truncate=False)


# --- empty values ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ALL_TYPES)
@pytest.mark.parametrize("value", ["", "   ", "\t\n", "\u3000"])
def test_empty_values_are_refused_for_every_type(kind: str, value: str) -> None:
    with pytest.raises(KeywordError) as caught:
        check_value(f"{kind}2", value)
    assert str(caught.value) == f"{kind}2: value is empty"
    assert caught.value.value == value


@pytest.mark.parametrize("kind", ALL_TYPES)
def test_none_is_empty(kind: str) -> None:
    with pytest.raises(KeywordError) as caught:
        check_value(f"{kind}2", None)
    assert str(caught.value) == f"{kind}2: value is empty"
    assert caught.value.value is None


def test_control_characters_alone_make_an_empty_thing() -> None:
    with pytest.raises(KeywordError, match=r"^thing2: value is empty$"):
        check_value("thing2", "\x00\r\n\x7f")


# --- whitespace and conversion ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "sent"),
    [
        ("thing2", "  订单已发货 \n", "订单已发货"),
        ("amount1", " ¥12.50 ", "¥12.50"),
        ("number3", "\t42\n", "42"),
        ("date4", "\u30002026-11-28\u3000", "2026-11-28"),
        ("phrase5", " 配送中 ", "配送中"),
    ],
)
def test_surrounding_whitespace_is_stripped_and_the_stripped_value_sent(
    key: str, value: str, sent: str
) -> None:
    assert check_value(key, value) == (sent, False)


@pytest.mark.parametrize(
    ("key", "value", "sent"),
    [
        ("number1", 42, "42"),
        ("number1", -3.5, "-3.5"),
        ("amount1", Decimal("12.50"), "12.50"),
        ("thing1", 2026, "2026"),
        ("character_string1", 123456, "123456"),
    ],
)
def test_non_strings_are_converted_with_str(key: str, value: object, sent: str) -> None:
    assert check_value(key, value) == (sent, False)


def test_a_float_whose_str_is_scientific_is_not_a_number() -> None:
    with pytest.raises(KeywordError, match=r"^number1: '1e-07' is not a valid number"):
        check_value("number1", 1e-7)


@pytest.mark.parametrize("value", [True, False])
def test_booleans_are_refused_even_where_any_text_is_fine(value: bool) -> None:
    with pytest.raises(KeywordError) as caught:
        check_value("thing1", value)
    assert (
        str(caught.value) == f"thing1: {value!r} is a boolean, not a valid thing ({RULES['thing']})"
    )


# --- boundaries ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "unit", "limit"),
    [
        ("number", "7", 32),
        ("letter", "q", 32),
        ("symbol", "#", 5),
        ("character_string", "Z", 32),
        ("phone_number", "8", 17),
        ("phrase", "好", 5),
        ("amount", "9", 10),
    ],
)
def test_exactly_at_the_limit_passes_and_one_over_fails(kind: str, unit: str, limit: int) -> None:
    assert ok(f"{kind}1", unit * limit) == unit * limit
    with pytest.raises(KeywordError) as caught:
        check_value(f"{kind}1", unit * (limit + 1))
    assert f"({RULES[kind]})" in str(caught.value)


def test_car_number_length_boundary() -> None:
    assert ok("car_number1", "粤A12345挂") == "粤A12345挂"  # 8
    with pytest.raises(
        KeywordError, match=r"^car_number1: '粤A123456挂' is not a valid car_number"
    ):
        check_value("car_number1", "粤A123456挂")  # 9


def test_length_errors_say_how_long_the_value_was() -> None:
    with pytest.raises(KeywordError) as caught:
        check_value("letter3", "a" * 33)
    assert str(caught.value) == (
        f"letter3: {'a' * 33!r} is not a valid letter: 33 letters ({RULES['letter']})"
    )
    with pytest.raises(KeywordError, match="is not a valid amount: 11 digits"):
        check_value("amount3", "12345678901")


def test_number_counts_only_digits_toward_its_limit() -> None:
    value = "-" + "1" * 30 + "." + "22"  # 32 digits, 34 characters
    assert ok("number1", value) == value
    with pytest.raises(KeywordError, match="33 digits"):
        check_value("number1", "-" + "1" * 31 + "." + "22")


def test_amount_decimals_count_toward_ten_digits() -> None:
    assert ok("amount1", "¥12345678.90元") == "¥12345678.90元"
    with pytest.raises(KeywordError, match="11 digits"):
        check_value("amount1", "123456789.01")


# --- thing and name: truncation --------------------------------------------------------------


def test_thing_of_21_characters_is_cut_to_20() -> None:
    value = "一二三四五六七八九十" * 2 + "多"
    assert check_value("thing2", value) == (value[:20], True)


def test_thing_of_20_characters_is_untouched() -> None:
    value = "一二三四五六七八九十" * 2
    assert check_value("thing2", value) == (value, False)


def test_truncation_does_not_leave_a_trailing_space() -> None:
    value = "a" * 19 + " bcd"
    assert check_value("thing2", value) == ("a" * 19, True)


def test_over_long_thing_raises_without_truncation() -> None:
    with pytest.raises(KeywordError) as caught:
        check_value("thing2", "x" * 21, truncate=False)
    assert str(caught.value) == (
        f"thing2: {'x' * 21!r} is not a valid thing: 21 characters (up to 20 characters)"
    )


def test_thing_counts_emoji_code_point_by_code_point() -> None:
    assert check_value("thing1", "👍" * 20) == ("👍" * 20, False)
    assert check_value("thing1", "👍" * 21) == ("👍" * 20, True)
    family = "👨\u200d👩\u200d👧"  # one picture, five code points
    assert len(family) == 5
    assert check_value("thing1", family * 4) == (family * 4, False)
    assert check_value("thing1", family * 4 + "!") == (family * 4, True)
    with pytest.raises(KeywordError, match="21 characters"):
        check_value("thing1", family * 4 + "!", truncate=False)


def test_thing_refuses_a_lone_surrogate() -> None:
    with pytest.raises(KeywordError, match="lone surrogate"):
        check_value("thing1", "bad \udcff byte")


@pytest.mark.parametrize(
    ("value", "sent"),
    [
        ("第一行\n第二行", "第一行 第二行"),
        ("line one\r\nline two", "line one line two"),
        ("tab\there", "tab here"),
        ("nul\x00and\x1fbell\x07", "nul and bell"),
        ("para\u2029graph\u2028line", "para graph line"),
        ("\n\n开头", "开头"),
    ],
)
def test_thing_newlines_and_control_characters_become_one_space(value: str, sent: str) -> None:
    assert check_value("thing3", value) == (sent, False)


def test_newlines_are_replaced_before_the_length_is_counted() -> None:
    value = "a" * 10 + "\r\n" + "b" * 9  # 20 once the CRLF is one space
    assert check_value("thing3", value) == ("a" * 10 + " " + "b" * 9, False)


def test_name_with_chinese_is_cut_to_10() -> None:
    value = "张" * 11
    assert check_value("name1", value) == ("张" * 10, True)


def test_name_without_chinese_is_cut_to_20() -> None:
    value = "Alexandra Konstantin"  # 20
    assert check_value("name1", value) == (value, False)
    assert check_value("name1", value + "a") == (value, True)


def test_any_chinese_character_makes_the_name_limit_10() -> None:
    value = "Zhang San 张"  # 11 characters, one Chinese
    assert check_value("name1", value) == ("Zhang San", True)  # cut to 10, trailing space gone
    with pytest.raises(KeywordError) as caught:
        check_value("name1", value, truncate=False)
    assert str(caught.value).startswith("name1: 'Zhang San 张' is not a valid name: 11 characters")


def test_over_long_name_raises_without_truncation() -> None:
    with pytest.raises(KeywordError, match=r"^name1: '张{11}' is not a valid name"):
        check_value("name1", "张" * 11, truncate=False)
    with pytest.raises(KeywordError, match="21 characters"):
        check_value("name1", "J" * 21, truncate=False)


def test_name_newline_becomes_a_space() -> None:
    assert check_value("name1", "Jane\nDoe") == ("Jane Doe", False)


def test_name_with_a_bad_character_is_refused_not_truncated() -> None:
    with pytest.raises(KeywordError) as caught:
        check_value("name1", "Agent 007 " + "x" * 30)
    assert "is not a valid name: '0' is not allowed" in str(caught.value)


@pytest.mark.parametrize("kind", sorted(KEYWORD_TYPES - {"thing", "name"}))
def test_only_thing_and_name_are_ever_truncated(kind: str) -> None:
    with pytest.raises(KeywordError):
        check_value(f"{kind}1", "1" * 40, choices=("1",))


def test_other_types_do_not_turn_newlines_into_spaces() -> None:
    with pytest.raises(KeywordError):
        check_value("phone_number1", "0766\n6688")


# --- messages --------------------------------------------------------------------------------


def test_messages_match_the_documented_examples() -> None:
    with pytest.raises(KeywordError) as caught:
        check_value("amount3", "12,5x")
    assert str(caught.value) == f"amount3: '12,5x' is not a valid amount ({RULES['amount']})"
    with pytest.raises(KeywordError) as caught:
        check_value("phrase4", "配送中ing")
    assert (
        str(caught.value)
        == "phrase4: '配送中ing' is not a valid phrase (up to 5 Chinese characters)"
    )


def test_long_values_are_cut_to_40_characters_in_messages() -> None:
    value = "订单号：" + "9" * 60
    with pytest.raises(KeywordError) as caught:
        check_value("character_string1", value)
    shown = re.search(r"^character_string1: (.*) is not a valid", str(caught.value))
    assert shown is not None
    assert len(shown.group(1)) == 40
    assert shown.group(1) == repr(value)[:39] + "…"
    assert caught.value.value == value  # the attribute keeps all of it


def test_impossible_dates_are_named_in_the_message() -> None:
    with pytest.raises(KeywordError) as caught:
        check_value("date2", "2026-02-30")
    assert str(caught.value) == (
        f"date2: '2026-02-30' is not a valid date: no such day 2026-02-30 ({RULES['date']})"
    )
