"""Programs for the program sandbox's tests: escapes it must refuse, and the programs a model writes for the
program_of_thought strategy that it must still run. Shared by tests/test_sandbox.py (run end to end) and
tests/test_properties.py (the static check, fuzzed)."""

# Each escape reaches, or would reach, something outside the sandbox: a module's globals, the interpreter,
# the environment, a frame, a file. Grouped by the route it takes.
FORMAT_ESCAPES = [  # str.format looks up attributes named in its template's fields
    "answer = '{0.__globals__[os].environ}'.format(print)",
    "answer = '{x.__class__}'.format_map({'x': 1})",
    "answer = str.format('{0.__class__}', 1)",
    "t = '{0.real.__class__}'\nanswer = t.format(1)",
    "answer = '{0[0].__class__}'.format([1])",
    "answer = '{:{0.__class__}}'.format(1)",
    "f = '{0.__class__}'.format\nanswer = f(1)",
    "answer = str.format_map('{x.__class__}', {'x': 1})",
    "answer = list(map(str.format, ['{0.__globals__}'], [print]))",
    "answer = sorted(['{0.__globals__}'], key=str.format)",
    "answer = f\"{'{0.__globals__}'.format(print)}\"",
]
PATTERN_ESCAPES = [  # a class pattern's keyword binds an attribute with no attribute node
    "match '{0.__globals__[sys].modules[os].environ} {0.__globals__[sys].executable}':\n"
    "    case str(format=f):\n        answer = f(print)",
    "match '{0.__globals__[sys].executable}':\n    case str(format_map=f):\n        answer = f({'0': print})",
    "def g(s):\n    match s:\n        case str(format=f):\n            return f(print)\nanswer = g('{0.__globals__}')",
    "match print:\n    case object(__globals__=g):\n        answer = g",
    "match 1:\n    case int(__class__=c):\n        answer = c",
    "match (i for i in []):\n    case x if True:\n        match x:\n            case str(gi_frame=fr):\n                answer = fr",
    "match 1:\n    case int(real=r, f_globals=g):\n        answer = g",
    "match '{0.__class__}':\n    case str(format=f) | str(format_map=f):\n        answer = f(1)",
]
BUILTIN_ESCAPES = [  # builtins that read attributes by name, or reach files and the interpreter
    'getattr(print, "__globals__")',
    "answer = vars(print)",
    "answer = type('').format('{0.__globals__}', print)",
    "answer = type(print)",
    "answer = object.__subclasses__()",
    "answer = dir(print)",
    "answer = hasattr(print, 'x')",
    "answer = globals()",
    "answer = locals()",
    "answer = super()",
    "answer = classmethod(print)",
    "answer = property(print)",
    '__import__("os").system("true")',
    'open("/etc/passwd").read()',
    "f = eval\nf('1')",
    "exec('import os')",
    "answer = compile('1', '', 'eval')",
    "breakpoint()",
    "answer = memoryview(b'')",
    "answer = __builtins__",
]
ATTRIBUTE_ESCAPES = [  # attributes that walk from an ordinary object to globals, code, frames or modules
    "answer = print.__globals__['sys']",
    "answer = print.__closure__",
    "answer = (lambda: 0).__code__",
    "answer = math.__loader__",
    "answer = math.__spec__",
    "answer = Fraction.__init__.__globals__",
    "answer = Fraction._normalize",
    "answer = Fraction.from_float.__func__",
    "answer = str.mro()",
    "().__class__.__bases__[0].__subclasses__()",
    "def g():\n    yield g.gi_frame.f_back\nanswer = list(g())",
    "g = (i for i in [1])\nanswer = g.gi_code",
    "try:\n    1 / 0\nexcept Exception as e:\n    answer = e.__traceback__.tb_frame",
    "try:\n    1 / 0\nexcept Exception as e:\n    answer = e.with_traceback(None)",
    "answer = f'{print.__globals__}'",
    "answer = operator.attrgetter('__globals__')(print)",
    "answer = collections.namedtuple('P', 'x')",
    "print.x = 1",
    "math.pi = 3",
    "del math.pi",
]
STATEMENT_ESCAPES = [  # constructs the program language leaves out, and dunder identifiers
    "import os\nanswer = os.getcwd()",
    "x = 1\nfrom os import path",
    "class A:\n    pass",
    "with open('x') as f:\n    answer = 1",
    "async def f():\n    await g()",
    "def __init__(self):\n    return 1",
    "def f(__x):\n    return __x",
    "global __builtins__",
    "try:\n    1 / 0\nexcept Exception as __e:\n    answer = 1",
    "match {}:\n    case {**__rest}:\n        answer = 1",
]
ESCAPES = FORMAT_ESCAPES + PATTERN_ESCAPES + BUILTIN_ESCAPES + ATTRIBUTE_ESCAPES + STATEMENT_ESCAPES

# Programs of the shape a model writes for program_of_thought, with the answer each gives.
PROGRAMS = [
    ("price = 12.5\nqty = 4\nanswer = price * qty", "50"),
    ("def total(items):\n    return sum(p * q for p, q in items)\nanswer = total([(2, 3), (4, 5)])", "26"),
    ("nums = [3, 1, 2]\nnums.sort()\nanswer = nums[-1]", "3"),
    ("words = 'the cat sat'.split()\nanswer = len(words)", "3"),
    ("answer = math.floor(7 / 2) + math.sqrt(9)", "6"),
    ("answer = Fraction(3, 4).limit_denominator(10) * 4", "3"),
    ("counts = {}\nfor ch in 'banana':\n    counts[ch] = counts.get(ch, 0) + 1\n"
     "answer = max(counts.items(), key=lambda kv: kv[1])[0]", "a"),
    ("answer = f'{2 / 3:.2f}'", "0.67"),
    ("answer = '{:.1f} {x}'.format(2.25, x='kg')", "2.2 kg"),
    ("match 3:\n    case int(real=r):\n        answer = r * 2", "6"),
    ("try:\n    x = 1 / 0\nexcept ZeroDivisionError:\n    x = 0\nanswer = x", "0"),
    ("total = 0\ni = 0\nwhile i < 5:\n    i += 1\n    if i == 2:\n        continue\n    total += i\nanswer = total", "13"),
    ("def fib(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\nanswer = fib(10)", "55"),
    ("x: float = 2.5\nanswer = round(x * 4)", "10"),
    ("def g(n):\n    yield from range(n)\nanswer = sum(g(4))", "6"),
    ("eggs = 16 - 3 - 4\nprint(f'Janet sells {eggs} eggs for ${eggs * 2}')\nprint(eggs * 2)", "18"),
    ("try:\n    int('x')\nexcept ValueError as e:\n    answer = len(e.args)", "1"),
]
