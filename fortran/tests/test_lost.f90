! Checks that a daemon that dies is reported as a code, not a hang or a crash.
!
! The program attaches to the store named by $SHMSTORE_NAME, prints "ready" and polls
! for a key that never comes. The Python side of the test kills the daemon at that
! point, so the poll and every later call must return SHMSTORE_CONNECTION_LOST.
! Exit status 0 when every check passed.
program test_lost
    use, intrinsic :: iso_c_binding, only: c_float
    use, intrinsic :: iso_fortran_env, only: output_unit
    use shmstore_client
    implicit none

    type(client_type) :: client
    real(c_float) :: array(4)
    logical :: exists
    integer :: code
    integer :: failures

    failures = 0
    array = 1.0

    code = client%initialize()
    if (code /= SHMSTORE_SUCCESS) then
        print '(a, a)', 'initialize failed: ', shmstore_error_message(code)
        error stop 1
    end if
    call expect(client%set_timeout(1000), SHMSTORE_SUCCESS, 'set_timeout')

    print '(a)', 'ready'
    flush(output_unit)

    ! 50 ms times 400 tries: 20 s, far longer than the test waits for the failure.
    code = client%poll_tensor('lost_never_stored', 50, 400, exists)
    call expect(code, SHMSTORE_CONNECTION_LOST, 'poll_tensor while the daemon dies')
    print '(a, a)', 'poll: ', shmstore_error_message(code)

    code = client%put_tensor('lost_after', array)
    call expect(code, SHMSTORE_CONNECTION_LOST, 'put after the daemon died')
    print '(a, a)', 'put: ', shmstore_error_message(code)

    code = client%destroy()
    print '(a, i0)', 'destroy: ', code

    if (failures > 0) then
        print '(a, i0, a)', 'test_lost: ', failures, ' checks failed'
        error stop 1
    end if
    print '(a)', 'test_lost: all checks passed'

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

end program test_lost
