"""Generate the type- and rank-specific code of the Fortran client module and its test.

The module shmstore_client.f90 is written by hand, except for the regions between
"! BEGIN GENERATED <region>" and "! END GENERATED <region>" lines, which this script
rewrites: one put, one unpack and one get_pointer procedure for every element type
and rank below, and the type-bound generic names that collect them. The test program
tests/test_types.f90 is generated whole: it round-trips every element type and rank.

Usage:
    python3 fortran/generate.py          rewrite the generated code in place
    python3 fortran/generate.py --check  exit 1 if a generated file is not up to date
"""

import argparse
import sys
from pathlib import Path
from typing import Dict, List, NamedTuple

FORTRAN_DIR = Path(__file__).resolve().parent
MODULE_PATH = FORTRAN_DIR / "shmstore_client.f90"
TEST_PATH = FORTRAN_DIR / "tests" / "test_types.f90"

RANKS = (1, 2, 3, 4)


class ElementType(NamedTuple):
    """A Fortran element type that the client can put, unpack and view."""

    name: str          # suffix of the specific procedure names
    declaration: str   # Fortran type of the array elements
    dtype: str         # SHMSTORE_* dtype constant
    conversion: str    # intrinsic that converts a default integer to this type


ELEMENT_TYPES = (
    ElementType("real32", "real(c_float)", "SHMSTORE_FLOAT32", "real(VALUE, c_float)"),
    ElementType("real64", "real(c_double)", "SHMSTORE_FLOAT64", "real(VALUE, c_double)"),
    ElementType("int8", "integer(c_int8_t)", "SHMSTORE_INT8", "int(VALUE, c_int8_t)"),
    ElementType("int16", "integer(c_int16_t)", "SHMSTORE_INT16", "int(VALUE, c_int16_t)"),
    ElementType("int32", "integer(c_int32_t)", "SHMSTORE_INT32", "int(VALUE, c_int32_t)"),
    ElementType("int64", "integer(c_int64_t)", "SHMSTORE_INT64", "int(VALUE, c_int64_t)"),
)

# Extents of the test arrays: rank r uses the first r of them.
TEST_EXTENTS = (2, 3, 4, 5)

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
            allocate(buffer, source=array)
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


def type_check_procedure(index: int, rank: int) -> str:
    """Return the test subroutine that round-trips one element type and rank."""
    element = ELEMENT_TYPES[index]
    other = ELEMENT_TYPES[(index + 1) % len(ELEMENT_TYPES)]
    other_rank = rank % len(RANKS) + 1
    name = suffix(element, rank)
    spec = shape_spec(rank)
    extents = ", ".join(str(extent) for extent in TEST_EXTENTS[:rank])
    value = element.conversion.replace("VALUE", "mod(i, 100) - 50")
    filler = element.conversion.replace("VALUE", "-99")
    return f"""
    !> Puts a {element.name} array of rank {rank}, reads it back three ways (unpack,
    !> unpack into a flat array with dims, pointer of a view) and checks that
    !> pointers of another rank or type are refused.
    subroutine check_{name}()
        character(len=*), parameter :: key = 'types_{name}'
        integer, parameter :: extents({rank}) = [{extents}]
        {element.declaration}, allocatable :: array{spec}
        {element.declaration}, allocatable :: output{spec}
        {element.declaration}, allocatable :: flat(:)
        {element.declaration}, pointer :: fptr{spec}
        {element.declaration}, pointer :: wrong_rank{shape_spec(other_rank)}
        {other.declaration}, pointer :: wrong_type{spec}
        type(tensor_view_type) :: view
        integer :: i

        array = reshape([({value}, i = 0, product(extents) - 1)], extents)
        call expect(client%put_tensor(key, array), SHMSTORE_SUCCESS, key // ' put')

        allocate(output, mold=array)
        output = {filler}
        call expect(client%unpack_tensor(key, output), SHMSTORE_SUCCESS, key // ' unpack')
        call check(all(output == array), key // ' unpack returns the values put')

        allocate(flat(product(extents)))
        flat = {filler}
        call expect(client%unpack_tensor(key, flat, dims=extents), SHMSTORE_SUCCESS, &
            key // ' unpack with dims')
        call check(all(flat == reshape(array, [product(extents)])), &
            key // ' unpack with dims returns the values in Fortran order')

        call expect(client%get_tensor_view(key, view), SHMSTORE_SUCCESS, key // ' view')
        call check(view%dtype() == {element.dtype}, key // ' view dtype')
        call check(view%rank() == {rank}, key // ' view rank')
        call check(view%order() == SHMSTORE_ORDER_F, key // ' view order')
        call check(all(view%shape() == extents), key // ' view shape')

        call expect(view%get_pointer(fptr), SHMSTORE_SUCCESS, key // ' pointer')
        if (associated(fptr)) then
            call check(all(shape(fptr) == extents), key // ' pointer shape')
            call check(all(fptr == array), key // ' pointer values')
        end if

        call expect(view%get_pointer(wrong_rank), SHMSTORE_TENSOR_MISMATCH, &
            key // ' pointer of rank {other_rank}')
        call check(.not. associated(wrong_rank), key // ' pointer of rank {other_rank} is null')
        call expect(view%get_pointer(wrong_type), SHMSTORE_TENSOR_MISMATCH, &
            key // ' pointer of type {other.name}')
        call check(.not. associated(wrong_type), key // ' pointer of type {other.name} is null')

        call expect(view%release(), SHMSTORE_SUCCESS, key // ' release')
        call check(.not. view%is_pinned(), key // ' view is released')
    end subroutine check_{name}
"""


def type_test_program() -> str:
    """Return the Fortran test program that covers every element type and rank."""
    names = [suffix(element, rank) for element in ELEMENT_TYPES for rank in RANKS]
    calls = "\n".join(f"    call check_{name}()" for name in names)
    procedures = "".join(type_check_procedure(index, rank)
                         for index in range(len(ELEMENT_TYPES)) for rank in RANKS)
    return f"""! Generated by fortran/generate.py; edit the generator, not this file.
!
! Round-trips every element type and rank of the Fortran client through the store
! named by $SHMSTORE_NAME. It leaves the keys types_<type>_rank<r> in the store for
! the Python side of the test to read. Exit status 0 when every check passed.
program test_types
    use, intrinsic :: iso_c_binding, only: c_double, c_float, c_int16_t, c_int32_t, &
        c_int64_t, c_int8_t
    use shmstore_client
    implicit none

    type(client_type) :: client
    integer :: failures

    failures = 0
    call expect(client%initialize(), SHMSTORE_SUCCESS, 'initialize')
    if (.not. client%is_initialized()) error stop 'test_types: cannot attach to the store'

{calls}

    call expect(client%destroy(), SHMSTORE_SUCCESS, 'destroy')
    if (failures > 0) then
        print '(a, i0, a)', 'test_types: ', failures, ' checks failed'
        error stop 1
    end if
    print '(a)', 'test_types: all checks passed'

contains

    !> Counts a failure unless code equals expected, and prints the message.
    subroutine expect(code, expected, what)
        integer, intent(in) :: code
        integer, intent(in) :: expected
        character(len=*), intent(in) :: what

        if (code == expected) return
        failures = failures + 1
        print '(a, a, i0, a, i0, a, a)', what, ': code ', code, ', expected ', expected, &
            ': ', shmstore_error_message(code)
    end subroutine expect

    !> Counts a failure unless condition holds.
    subroutine check(condition, what)
        logical, intent(in) :: condition
        character(len=*), intent(in) :: what

        if (condition) return
        failures = failures + 1
        print '(a, a)', 'check failed: ', what
    end subroutine check
{procedures}
end program test_types
"""


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
                        help="exit 1 if a generated file is not up to date")
    arguments = parser.parse_args()

    outputs = {
        MODULE_PATH: generate(MODULE_PATH.read_text()),
        TEST_PATH: type_test_program(),
    }

    stale = 0
    for path, text in outputs.items():
        current = path.read_text() if path.exists() else ""
        if current == text:
            continue
        if arguments.check:
            print(f"generate.py: {path} is out of date; run python3 fortran/generate.py",
                  file=sys.stderr)
            stale += 1
        else:
            path.write_text(text)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
