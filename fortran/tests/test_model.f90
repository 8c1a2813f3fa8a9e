! Runs a model through the inference service from Fortran.
!
! The first command-line argument is the path of a TorchScript file that computes
! y = x @ w + 0.5 for x of shape (N, 4), with w(i, j) = (3 (i-1) + (j-1)) / 10
! (a torch.nn.Linear saved by the Python side of the test). The store named by
! $SHMSTORE_NAME must run inference workers. Exit status 0 when every check passed.
program test_model
    use, intrinsic :: iso_c_binding, only: c_float
    use shmstore_client
    implicit none

    type(client_type) :: client
    character(len=4096) :: model_path
    real(c_float) :: x(2, 4)
    real(c_float) :: weight(4, 3)
    real(c_float) :: expected(2, 3)
    real(c_float) :: y(2, 3)
    logical :: exists
    integer :: code
    integer :: failures
    integer :: i
    integer :: j

    failures = 0
    call get_command_argument(1, model_path)

    call expect(client%initialize(), SHMSTORE_SUCCESS, 'initialize')
    if (.not. client%is_initialized()) error stop 'test_model: cannot attach to the store'

    ! x(i, j) is row i, feature j of the batch, as py[i-1, j-1] would be.
    x = reshape([(real(i, c_float) / 4, i = 1, 8)], [2, 4])
    do j = 1, 3
        do i = 1, 4
            weight(i, j) = real(3 * (i - 1) + (j - 1), c_float) / 10
        end do
    end do
    expected = matmul(x, weight) + 0.5

    call expect(client%set_model_from_file('model_rows', model_path, 'TORCH', 'CPU', &
        batch_size=8, min_batch_size=1, min_batch_timeout=1), SHMSTORE_SUCCESS, &
        'set_model_from_file')
    call expect(client%model_exists('model_rows', exists), SHMSTORE_SUCCESS, 'model_exists')
    call check(exists, 'model_exists after set_model_from_file is true')

    call expect(client%put_tensor('model_in', x), SHMSTORE_SUCCESS, 'put input')
    call expect(client%run_model('model_rows', ['model_in'], ['model_out'], timeout_ms=30000), &
        SHMSTORE_SUCCESS, 'run_model')
    y = 0
    call expect(client%unpack_tensor('model_out', y), SHMSTORE_SUCCESS, 'unpack output')
    call check(maxval(abs(y - expected)) < 1e-4, 'model output equals x @ w + 0.5')

    code = client%run_model('model_absent', ['model_in'], ['model_out'], timeout_ms=30000)
    call check(code < 0, 'run_model of a missing model fails')
    print '(a, i0, a, a)', 'absent model: code ', code, ': ', shmstore_error_message(code)

    call expect(client%destroy(), SHMSTORE_SUCCESS, 'destroy')
    if (failures > 0) then
        print '(a, i0, a)', 'test_model: ', failures, ' checks failed'
        error stop 1
    end if
    print '(a)', 'test_model: all checks passed'

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

end program test_model
