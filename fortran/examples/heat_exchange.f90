! A minimal simulation step that shares a field with other processes through shmstore.
!
! Each step stores the temperature field under "temperature_<step>", so that a Python
! analysis or an inference worker on the same node can read it without a copy, and
! reads it back to show the round trip. Run it next to a store:
!
!   shmstore serve --name demo --memory 256M &
!   SHMSTORE_NAME=demo ./heat_exchange
program heat_exchange
    use, intrinsic :: iso_c_binding, only: c_double
    use shmstore_client
    implicit none

    integer, parameter :: nx = 64
    integer, parameter :: ny = 32
    integer, parameter :: steps = 3

    type(client_type) :: client
    real(c_double) :: temperature(nx, ny)
    real(c_double) :: received(nx, ny)
    character(len=32) :: key
    integer :: code
    integer :: step

    code = client%initialize()
    if (code /= SHMSTORE_SUCCESS) then
        print '(a, a)', 'heat_exchange: cannot attach to the store: ', shmstore_error_message(code)
        print '(a)', 'Start one with "shmstore serve --name NAME" and set SHMSTORE_NAME=NAME.'
        error stop 1
    end if

    temperature = 280.0d0
    do step = 1, steps
        temperature(nx / 2, ny / 2) = temperature(nx / 2, ny / 2) + 10.0d0
        write(key, '(a, i0)') 'temperature_', step

        code = client%put_tensor(key, temperature)
        if (code /= SHMSTORE_SUCCESS) then
            print '(a, a)', 'heat_exchange: put failed: ', shmstore_error_message(code)
            exit
        end if

        code = client%unpack_tensor(key, received)
        if (code /= SHMSTORE_SUCCESS) then
            print '(a, a)', 'heat_exchange: unpack failed: ', shmstore_error_message(code)
            exit
        end if
        print '(a, a, a, f8.2)', 'stored ', trim(key), ', peak temperature ', maxval(received)
    end do

    ! A missing key is an error code, not the end of the program.
    code = client%unpack_tensor('temperature_0', received)
    print '(a, a)', 'reading a missing key: ', shmstore_error_message(code)

    code = client%destroy()
end program heat_exchange
