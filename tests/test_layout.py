"""The package's layering: no import cycles between vidiff's modules (the layers themselves are import-linter's
contract in pyproject.toml, which .ci/run checks with `lint-imports`)."""

import grimp


def find_cycle(adjacent: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(module):
        state[module] = "open"
        stack.append(module)
        for other in adjacent[module]:
            if state.get(other) == "open":
                return stack[stack.index(other):] + [other]
            if other not in state and (cycle := visit(other)):
                return cycle
        stack.pop()
        state[module] = "done"
        return None

    for module in adjacent:
        if module not in state and (cycle := visit(module)):
            return cycle
    return None


def test_find_cycle_finds_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_vidiff_modules_import_each_other_without_cycles():
    graph = grimp.build_graph("vidiff")  # function-level imports included
    adjacent = {module: graph.find_modules_directly_imported_by(module) for module in graph.modules}
    assert len(adjacent) > 40
    assert find_cycle(adjacent) is None


def test_runtime_modules_never_import_the_testing_scaffolding():
    graph = grimp.build_graph("vidiff")
    importers = {m for m in graph.modules if not m.startswith("vidiff.testing")
                 and graph.find_modules_directly_imported_by(m) & {"vidiff.testing.tiny", "vidiff.testing.configs"}}
    assert importers == set()


def test_tiny_builders_seed_only_their_own_generator():
    import torch

    from vidiff.testing.tiny import make_unet2d, make_vae

    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    first = make_unet2d(width=32, seed=5)
    make_vae(seed=5)
    assert torch.equal(torch.rand(3), expected)  # the caller's random stream is untouched
    again = make_unet2d(width=32, seed=5)
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), again.state_dict().values()))
