"""Generate the type- and rank-specific procedures of the Fortran client module.

The module shmstore_client.f90 is written by hand, except for the regions between
"! BEGIN GENERATED <region>" and "! END GENERATED <region>" lines, which this script
rewrites: one put, one unpack and one get_pointer procedure for every element type
and rank below, and the type-bound generic names that collect them.

Usage:
    python3 fortran/generate.py          rewrite the regions in place
    python3 fortran/generate.py --check  exit 1 if the file is not up to date
"""

import argparse
import sys
from pathlib import Path
from typing import Dict, List, NamedTuple

MODULE_PATH = Path(__file__).resolve().parent / "shmstore_client.f90"

RANKS = (1, 2, 3, 4)


class ElementType(NamedTuple):
    """A Fortran element type that the client can put, unpack and view."""

    name: str          # suffix of the specific procedure names
    declaration: str   # Fortran type of the array elements
    dtype: str         # SHMSTORE_* dtype constant


ELEMENT_TYPES = (
    ElementType("real32", "real(c_float)", "SHMSTORE_FLOAT32"),
    ElementType("real64", "real(c_double)", "SHMSTORE_FLOAT64"),
    ElementType("int8", "integer(c_int8_t)", "SHMSTORE_INT8"),
    ElementType("int16", "integer(c_int16_t)", "SHMSTORE_INT16"),
    ElementType("int32", "integer(c_int32_t)", "SHMSTORE_INT32"),
    ElementType("int64", "integer(c_int64_t)", "SHMSTORE_INT64"),
)

INDENT = "    "


def shape_spec(rank: int) -> str:
    """Return the assumed-shape or deferred-shape spec of a rank, e.g. '(:,:)'."""
    return "(" + ",".join([":"] * rank) + ")"


def suffix(element: ElementType, rank: int) -> str:
    return f"{element.name}_rank{rank}"


def generic_binding(generic: str, specifics: List[str], indent: str) -> List[str]:
    """Return a generic type-bound statement listing specifics, one per line."""
    lines = [f"{indent}generic :: {generic} => &"]
    for index, name in enumerate(specifics):
        continuation = ", &" if index < len(specifics) - 1 else ""
        lines.append(f"{indent}    {name}{continuation}")
    return lines


def client_bindings() -> List[str]:
    indent = INDENT * 2
    puts = [f"put_tensor_{suffix(e, r)}" for e in ELEMENT_TYPES for r in RANKS]
    unpacks = [f"unpack_tensor_{suffix(e, r)}" for e in ELEMENT_TYPES for r in RANKS]

    lines = [f"{indent}procedure, private :: {name}" for name in puts + unpacks]
    lines += generic_binding("put_tensor", puts, indent)
    lines += generic_binding("unpack_tensor", unpacks, indent)
    return lines


def view_bindings() -> List[str]:
    indent = INDENT * 2
    pointers = [f"get_pointer_{suffix(e, r)}" for e in ELEMENT_TYPES for r in RANKS]

    lines = [f"{indent}procedure, private :: {name}" for name in pointers]
    lines += generic_binding("get_pointer", pointers, indent)
    return lines


def put_procedure(element: ElementType, rank: int) -> str:
    name = f"put_tensor_{suffix(element, rank)}"
    spec = shape_spec(rank)
    return f"""
    !> Stores a copy of array under key ({element.name}, rank {rank}). dims, if
    !> present, gives the stored extents and must hold size(array) elements.
    !> A non-contiguous array (a section) is copied to a contiguous buffer first.
    function {name}(this, key, array, dims) result(code)
        class(client_type), intent(in) :: this
        character(len=*), intent(in) :: key
        {element.declaration}, intent(in), target :: array{spec}
        integer, intent(in), optional :: dims(:)
        integer :: code
        {element.declaration}, allocatable, target :: buffer{spec}

        if (size(array) == 0) then
            code = put_data(this, key, c_null_ptr, {element.dtype}, &
                shape(array, kind=c_int64_t), dims)
        else if (is_contiguous(array)) then
            code = put_data(this, key, c_loc(array), {element.dtype}, &
                shape(array, kind=c_int64_t), dims)
        else
            buffer = array
            code = put_data(this, key, c_loc(buffer), {element.dtype}, &
                shape(array, kind=c_int64_t), dims)
        end if
    end function {name}
"""


def unpack_procedure(element: ElementType, rank: int) -> str:
    name = f"unpack_tensor_{suffix(element, rank)}"
    spec = shape_spec(rank)
    return f"""
    !> Copies the tensor under key into array ({element.name}, rank {rank}) in
    !> Fortran order. The stored dtype and dims must match the array, or dims
    !> if present. On failure array keeps its values.
    function {name}(this, key, array, dims) result(code)
        class(client_type), intent(in) :: this
        character(len=*), intent(in) :: key
        {element.declaration}, intent(inout), target :: array{spec}
        integer, intent(in), optional :: dims(:)
        integer :: code
        {element.declaration}, allocatable, target :: buffer{spec}

        if (size(array) == 0) then
            code = unpack_data(this, key, c_null_ptr, {element.dtype}, &
                shape(array, kind=c_int64_t), dims)
        else if (is_contiguous(array)) then
            code = unpack_data(this, key, c_loc(array), {element.dtype}, &
                shape(array, kind=c_int64_t), dims)
        else
            allocate(buffer, mold=array)
            code = unpack_data(this, key, c_loc(buffer), {element.dtype}, &
                shape(array, kind=c_int64_t), dims)
            if (code == SHMSTORE_SUCCESS) array = buffer
        end if
    end function {name}
"""


def pointer_procedure(element: ElementType, rank: int) -> str:
    name = f"get_pointer_{suffix(element, rank)}"
    spec = shape_spec(rank)
    return f"""
    !> Points fptr at the viewed tensor ({element.name}, rank {rank}) without a
    !> copy. Fails with SHMSTORE_TENSOR_MISMATCH, and nullifies fptr, when the
    !> dtype or rank differ.
    function {name}(this, fptr) result(code)
        class(tensor_view_type), intent(in) :: this
        {element.declaration}, pointer, intent(out) :: fptr{spec}
        integer :: code
        integer(c_int64_t) :: extents({rank})

        nullify(fptr)
        code = view_extents(this, {element.dtype}, {rank}, extents)
        if (code /= SHMSTORE_SUCCESS) return

        call c_f_pointer(this%c_view%data, fptr, extents)
    end function {name}
"""


def tensor_procedures() -> List[str]:
    text = ""
    for element in ELEMENT_TYPES:
        for rank in RANKS:
            text += put_procedure(element, rank)
            text += unpack_procedure(element, rank)
            text += pointer_procedure(element, rank)
    return text.strip("\n").split("\n")


def replace_region(lines: List[str], region: str, body: List[str]) -> List[str]:
    """Return lines with the body of one generated region replaced."""
    begin = f"! BEGIN GENERATED {region}"
    end = f"! END GENERATED {region}"
    starts = [i for i, line in enumerate(lines) if line.strip() == begin]
    stops = [i for i, line in enumerate(lines) if line.strip() == end]
    if len(starts) != 1 or len(stops) != 1 or stops[0] < starts[0]:
        raise SystemExit(f"generate.py: {MODULE_PATH} needs one '{begin}' line "
                         f"followed by one '{end}' line")
    return lines[: starts[0] + 1] + body + lines[stops[0]:]


def generate(source: str) -> str:
    regions: Dict[str, List[str]] = {
        "client bindings": client_bindings(),
        "view bindings": view_bindings(),
        "tensor procedures": tensor_procedures(),
    }
    lines = source.split("\n")
    for region, body in regions.items():
        lines = replace_region(lines, region, body)
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if the generated regions are not up to date")
    arguments = parser.parse_args()

    source = MODULE_PATH.read_text()
    generated = generate(source)
    if arguments.check:
        if generated != source:
            print(f"generate.py: {MODULE_PATH} is out of date; run python3 fortran/generate.py",
                  file=sys.stderr)
            return 1
        return 0

    if generated != source:
        MODULE_PATH.write_text(generated)
    return 0


if __name__ == "__main__":
    sys.exit(main())
