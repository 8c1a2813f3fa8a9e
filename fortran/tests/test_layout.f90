! Checks the memory layout contract between Fortran and Python through the store
! named by $SHMSTORE_NAME.
!
! Before this program runs, Python stores the float64 matrix [[1,2,3],[4,5,6]] as
! layout_py_c (C order) and as layout_py_f (Fortran order). This program checks
! that both arrive in a Fortran (2,3) array with b(i,j) == py[i-1,j-1], and
! leaves for Python:
!   layout_fortran  reshape([1,...,6], [2,3]) as int64
!   layout_section  the section a(1:2, 1:3:2) of a = reshape([1,...,12], [3,4])
!   layout_reversed the section a(3:1:-1, 2:4:2) of the same a
!   layout_rank3    the section b(2:4:2, 1:3:2, :) of b = reshape([1,...,24], [4,3,2]), int32
! Exit status 0 when every check passed.
program test_layout
    use, intrinsic :: iso_c_binding, only: c_double, c_int32_t, c_int64_t
    use shmstore_client
    implicit none

    type(client_type) :: client
    integer :: failures

    failures = 0
    call expect(client%initialize(), SHMSTORE_SUCCESS, 'initialize')
    if (.not. client%is_initialized()) error stop 'test_layout: cannot attach to the store'

    call put_fortran_matrix()
    call check_python_matrix('layout_py_c', SHMSTORE_ORDER_C)
    call check_python_matrix('layout_py_f', SHMSTORE_ORDER_F)
    call check_sections()
    call put_rank3_section()

    call expect(client%destroy(), SHMSTORE_SUCCESS, 'destroy')
    if (failures > 0) then
        print '(a, i0, a)', 'test_layout: ', failures, ' checks failed'
        error stop 1
    end if
    print '(a)', 'test_layout: all checks passed'

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

    subroutine put_fortran_matrix()
        integer(c_int64_t) :: a(2, 3)
        integer :: i

        a = reshape([(int(i, c_int64_t), i = 1, 6)], [2, 3])
        call expect(client%put_tensor('layout_fortran', a), SHMSTORE_SUCCESS, 'put layout_fortran')
    end subroutine put_fortran_matrix

    !> Checks a matrix that Python stored as [[1,2,3],[4,5,6]] in the given order.
    subroutine check_python_matrix(key, order)
        character(len=*), intent(in) :: key
        integer, intent(in) :: order
        real(c_double) :: b(2, 3)
        real(c_double) :: expected(2, 3)
        type(tensor_view_type) :: view
        real(c_double), pointer :: fptr(:, :)
        integer :: i
        integer :: j

        do j = 1, 3
            do i = 1, 2
                expected(i, j) = real(3 * (i - 1) + j, c_double)
            end do
        end do

        b = 0
        call expect(client%unpack_tensor(key, b), SHMSTORE_SUCCESS, key // ' unpack')
        call check(all(b == expected), key // ' unpack gives b(i,j) == py[i-1,j-1]')

        call expect(client%get_tensor_view(key, view), SHMSTORE_SUCCESS, key // ' view')
        call check(view%order() == order, key // ' view order')
        call check(all(view%shape() == [2, 3]), key // ' view shape is the numpy shape')
        call expect(view%get_pointer(fptr), SHMSTORE_SUCCESS, key // ' pointer')
        if (associated(fptr)) then
            if (order == SHMSTORE_ORDER_F) then
                call check(all(shape(fptr) == [2, 3]), key // ' pointer shape')
                call check(all(fptr == expected), key // ' pointer maps py[i-1,j-1]')
            else
                call check(all(shape(fptr) == [3, 2]), key // ' pointer shape is reversed')
                call check(all(fptr == transpose(expected)), &
                    key // ' reversed pointer maps py[i-1,j-1] to fptr(j,i)')
            end if
        end if
        call expect(view%release(), SHMSTORE_SUCCESS, key // ' release')
    end subroutine check_python_matrix

    !> Puts the non-contiguous section a(1:2, 1:3:2) and unpacks it into the
    !> section c(2:3, 1:4:3) of a zero matrix: exactly four elements change.
    subroutine check_sections()
        real(c_double) :: a(3, 4)
        real(c_double) :: c(4, 4)
        real(c_double) :: expected(4, 4)
        real(c_double) :: whole(2, 2)
        integer :: i

        a = reshape([(real(i, c_double), i = 1, 12)], [3, 4])
        call check(.not. is_contiguous(a(1:2, 1:3:2)), 'the section is not contiguous')
        call expect(client%put_tensor('layout_section', a(1:2, 1:3:2)), SHMSTORE_SUCCESS, &
            'put section')

        whole = 0
        call expect(client%unpack_tensor('layout_section', whole), SHMSTORE_SUCCESS, &
            'unpack section into a whole array')
        call check(all(whole == reshape([1.0d0, 2.0d0, 7.0d0, 8.0d0], [2, 2])), &
            'section values are a(1,1), a(2,1), a(1,3), a(2,3)')

        c = 0
        expected = 0
        expected(2, 1) = 1
        expected(3, 1) = 2
        expected(2, 4) = 7
        expected(3, 4) = 8
        call expect(client%unpack_tensor('layout_section', c(2:3, 1:4:3)), SHMSTORE_SUCCESS, &
            'unpack into a section')
        call check(all(c == expected), 'unpack into a section writes exactly its four elements')

        c = -1
        call expect(client%unpack_tensor('layout_py_c', c(1:4:2, 2:4)), SHMSTORE_SUCCESS, &
            'unpack a Python tensor into a section')
        call check(all(c(1:4:2, 2:4) == reshape([1.0d0, 4.0d0, 2.0d0, 5.0d0, 3.0d0, 6.0d0], &
            [2, 3])), 'section receives the Python values')
        call check(all(c(2:4:2, :) == -1) .and. all(c(:, 1) == -1), &
            'unpack into a section leaves other elements alone')

        call expect(client%put_tensor('layout_reversed', a(3:1:-1, 2:4:2)), SHMSTORE_SUCCESS, &
            'put a section with a negative stride')
        c = 0
        call expect(client%unpack_tensor('layout_reversed', c(1:3, 1:2)), SHMSTORE_SUCCESS, &
            'unpack the reversed section')
        call check(all(c(1:3, 1:2) == a(3:1:-1, 2:4:2)), 'reversed section round-trips')
    end subroutine check_sections

    !> Puts a rank-3 int32 section; the Python side of the test checks its values.
    subroutine put_rank3_section()
        integer(c_int32_t) :: b(4, 3, 2)
        integer(c_int32_t) :: output(2, 2, 2)
        integer :: i

        b = reshape([(int(i, c_int32_t), i = 1, 24)], [4, 3, 2])
        call expect(client%put_tensor('layout_rank3', b(2:4:2, 1:3:2, :)), SHMSTORE_SUCCESS, &
            'put a rank-3 section')
        output = 0
        call expect(client%unpack_tensor('layout_rank3', output), SHMSTORE_SUCCESS, &
            'unpack the rank-3 section')
        call check(all(output == b(2:4:2, 1:3:2, :)), 'rank-3 section round-trips')
    end subroutine put_rank3_section

end program test_layout
