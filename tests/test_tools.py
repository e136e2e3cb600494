"""Tools: schemas from signatures, the safe calculator, the canned weather tool, loading and calling."""

import json

import pytest

from taskfit.errors import TaskfitError
from taskfit.tools import (
    calculator,
    call_tool,
    execute,
    get_current_weather,
    load_tool,
    tool_from_function,
)


def book_flight(origin: str, seats: int, budget: float, direct: bool = False, note: str | None = None) -> str:
    """Book a flight.

    Args:
        origin: Airport code, e.g. "CDG".
        seats: How many seats.
    """
    return f"{origin} x{seats} <= {budget} direct={direct} note={note}"


def test_schema_from_signature_and_docstring():
    tool = tool_from_function(book_flight)
    assert tool.name == "book_flight" and tool.description == "Book a flight."
    assert tool.parameters == {
        "type": "object",
        "properties": {
            "origin": {"type": "string", "description": 'Airport code, e.g. "CDG".'},
            "seats": {"type": "integer", "description": "How many seats."},
            "budget": {"type": "number"},
            "direct": {"type": "boolean", "default": False},
            "note": {"type": "string", "default": None},
        },
        "required": ["origin", "seats", "budget"],
    }
    assert tool.schema() == {"type": "function", "function": {
        "name": "book_flight", "description": "Book a flight.", "parameters": tool.parameters}}


def test_calculator_evaluates_arithmetic():
    assert calculator("(12+3)*4/5") == "12"
    assert calculator("-2 ** 2 + 7 // 2 % 3") == "-4"
    assert calculator("7/4") == "1.75"
    assert calculator("2^10") == "1024" and calculator("1,000 * 3") == "3000"


@pytest.mark.parametrize("expr, error", [
    ("__import__('os')", "function calls are not allowed"),
    ("x + 1", "names are not allowed"),
    ("(1).__class__", "unsupported syntax"),
    ("9 ** 9 ** 9", "exponent too large"),
    ("10 ** 2000", "more than 1000 digits"),
    ("[1, 2]", "unsupported syntax"),
    ("lambda: 1", "unsupported syntax"),
    ("1 +", "not an arithmetic expression"),
])
def test_calculator_refuses_everything_else(expr, error):
    with pytest.raises(ValueError, match=error):
        calculator(expr)


def test_weather_is_canned_and_deterministic():
    assert json.loads(get_current_weather("Paris")) == {
        "location": "Paris", "temperature": 20, "unit": "celsius", "conditions": "sunny"}
    assert json.loads(get_current_weather("paris, France", unit="fahrenheit"))["temperature"] == 68
    assert get_current_weather("Atlantis") == get_current_weather("atlantis")  # unknown places: stable too
    with pytest.raises(ValueError, match="kelvin"):
        get_current_weather("Paris", unit="kelvin")


def test_call_tool_checks_arguments_and_catches_failures():
    weather = load_tool("get_current_weather")
    assert json.loads(call_tool(weather, {"location": "Tokyo", "unit": "fahrenheit"}))["temperature"] == 77
    assert call_tool(weather, {}) == "Error: get_current_weather: missing required argument(s) location"
    assert "unknown argument(s) city" in call_tool(weather, {"location": "Rome", "city": "Rome"})
    failed = execute(load_tool("calculator"), {"expression": "1/0"})
    assert failed.output.startswith("Error: ") and "ZeroDivisionError" in failed.error
    assert execute(load_tool("calculator"), {"expression": "2*3"}).error is None
    flight = tool_from_function(book_flight)
    assert call_tool(flight, {"origin": "CDG", "seats": "2", "budget": 300}) == "CDG x2 <= 300.0 direct=False note=None"


def test_load_tool_by_name_path_and_mapping():
    assert load_tool("calculator").parameters["required"] == ["expression"]
    assert load_tool("taskfit.tools:calculator").function is calculator
    custom = load_tool({"function": "taskfit.tools:calculator", "name": "calc", "description": "Do sums.",
                        "parameters": {"type": "object", "properties": {"expression": {"type": "string"}},
                                       "required": ["expression"]}})
    assert (custom.name, custom.description) == ("calc", "Do sums.")
    assert call_tool(custom, {"expression": "1+1"}) == "2"


@pytest.mark.parametrize("spec, message", [
    ("abacus", "unknown tool 'abacus'"),
    ("no_such_pkg.mod:fn", "tool 'no_such_pkg.mod:fn': cannot import"),
    ({"function": "taskfit.tools:nothing_here"}, "tool 'taskfit.tools:nothing_here': cannot import"),
    ({"function": "taskfit.tools:BUILTINS"}, "is not a function"),
    ({"function": "taskfit.tools:calculator", "colour": "red"}, "colour"),
    ({"description": "no function"}, "function"),
])
def test_load_tool_errors_name_the_spec(spec, message):
    with pytest.raises(TaskfitError, match=message):
        load_tool(spec)
