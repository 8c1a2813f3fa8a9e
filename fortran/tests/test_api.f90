! Exercises every function of the Fortran client against the store named by
! $SHMSTORE_NAME: key operations, error codes and messages, argument checks,
! views that outlive their key and their client, zero-sized tensors and the
! inference entry points. Every error must come back as a code while the program
! carries on. Exit status 0 when every check passed.
program test_api
    use, intrinsic :: iso_c_binding, only: c_double, c_float, c_int32_t
    use shmstore_client
    implicit none

    type(client_type) :: client
    integer :: failures

    failures = 0

    call check_uninitialized_client()

    call expect(client%initialize(), SHMSTORE_SUCCESS, 'initialize')
    if (.not. client%is_initialized()) error stop 'test_api: cannot attach to the store'
    call expect(client%set_timeout(2000), SHMSTORE_SUCCESS, 'set_timeout')
    call expect(client%initialize(), SHMSTORE_INVALID_ARGUMENT, 'initialize twice')

    call check_missing_key()
    call check_key_operations()
    call check_trailing_blanks()
    call check_argument_errors()
    call check_reshape_with_dims()
    call check_zero_sized()
    call check_out_of_memory()
    call check_view_outlives_key()
    call check_inference()
    call check_view_outlives_client()

    if (failures > 0) then
        print '(a, i0, a)', 'test_api: ', failures, ' checks failed'
        error stop 1
    end if
    print '(a)', 'test_api: all checks passed'

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

    !> Prints the message of code on a line that starts with label, so that
    !> the Python side can check the message text.
    subroutine print_message(label, code)
        character(len=*), intent(in) :: label
        integer, intent(in) :: code

        print '(a, a, a)', label, ': ', shmstore_error_message(code)
    end subroutine print_message

    subroutine check_uninitialized_client()
        type(client_type) :: unused
        real(c_float) :: array(3)
        logical :: exists
        integer :: code

        array = 1.0
        call check(.not. unused%is_initialized(), 'new client is not initialized')

        code = unused%put_tensor('never_stored', array)
        call expect(code, SHMSTORE_INVALID_ARGUMENT, 'put on an uninitialized client')
        call check(index(shmstore_error_message(code), 'initialize') > 0, &
            'message of an uninitialized client names initialize')
        call print_message('uninitialized', code)

        call expect(unused%tensor_exists('never_stored', exists), SHMSTORE_INVALID_ARGUMENT, &
            'tensor_exists on an uninitialized client')
        call check(.not. exists, 'tensor_exists on an uninitialized client sets false')
        call expect(unused%destroy(), SHMSTORE_SUCCESS, 'destroy of an uninitialized client')
    end subroutine check_uninitialized_client

    subroutine check_missing_key()
        real(c_double) :: array(2, 3)
        type(tensor_view_type) :: view
        logical :: exists
        integer :: code

        array = 7.0d0
        code = client%unpack_tensor('api_missing', array)
        call expect(code, SHMSTORE_KEY_NOT_FOUND, 'unpack of a missing key')
        call check(all(array == 7.0d0), 'failed unpack leaves the array unchanged')
        call check(len(shmstore_error_message(code)) > 0, 'missing key has a message')
        call print_message('missing unpack', code)

        code = client%get_tensor_view('api_missing', view)
        call expect(code, SHMSTORE_KEY_NOT_FOUND, 'view of a missing key')
        call check(.not. view%is_pinned(), 'failed view is not pinned')
        call print_message('missing view', code)

        call expect(client%delete_tensor('api_missing'), SHMSTORE_KEY_NOT_FOUND, &
            'delete of a missing key')
        call expect(client%rename_tensor('api_missing', 'api_missing_2'), &
            SHMSTORE_KEY_NOT_FOUND, 'rename of a missing key')
        call expect(client%copy_tensor('api_missing', 'api_missing_2'), &
            SHMSTORE_KEY_NOT_FOUND, 'copy of a missing key')

        call expect(client%tensor_exists('api_missing', exists), SHMSTORE_SUCCESS, &
            'tensor_exists of a missing key')
        call check(.not. exists, 'tensor_exists of a missing key is false')
        call expect(client%poll_tensor('api_missing', 10, 3, exists), SHMSTORE_SUCCESS, &
            'poll_tensor of a missing key')
        call check(.not. exists, 'poll_tensor of a missing key is false')
    end subroutine check_missing_key

    subroutine check_key_operations()
        real(c_double) :: array(2, 3)
        real(c_double) :: output(2, 3)
        logical :: exists
        integer :: i

        array = reshape([(real(i, c_double), i = 1, 6)], [2, 3])
        call expect(client%put_tensor('api_key', array), SHMSTORE_SUCCESS, 'put')
        call expect(client%tensor_exists('api_key', exists), SHMSTORE_SUCCESS, 'tensor_exists')
        call check(exists, 'tensor_exists after put is true')
        call expect(client%poll_tensor('api_key', 10, 3, exists), SHMSTORE_SUCCESS, &
            'poll_tensor')
        call check(exists, 'poll_tensor after put is true')

        call expect(client%copy_tensor('api_key', 'api_copy'), SHMSTORE_SUCCESS, 'copy_tensor')
        output = 0
        call expect(client%unpack_tensor('api_copy', output), SHMSTORE_SUCCESS, 'unpack copy')
        call check(all(output == array), 'copy holds the values put')

        call expect(client%rename_tensor('api_copy', 'api_renamed'), SHMSTORE_SUCCESS, &
            'rename_tensor')
        call expect(client%tensor_exists('api_copy', exists), SHMSTORE_SUCCESS, &
            'tensor_exists after rename')
        call check(.not. exists, 'old key is gone after rename')
        output = 0
        call expect(client%unpack_tensor('api_renamed', output), SHMSTORE_SUCCESS, &
            'unpack renamed')
        call check(all(output == array), 'renamed key holds the values put')

        array = -array
        call expect(client%put_tensor('api_key', array), SHMSTORE_SUCCESS, 'overwrite')
        output = 0
        call expect(client%unpack_tensor('api_key', output), SHMSTORE_SUCCESS, &
            'unpack overwritten')
        call check(all(output == array), 'overwrite replaces the values')

        call expect(client%delete_tensor('api_renamed'), SHMSTORE_SUCCESS, 'delete_tensor')
        call expect(client%tensor_exists('api_renamed', exists), SHMSTORE_SUCCESS, &
            'tensor_exists after delete')
        call check(.not. exists, 'deleted key is gone')
    end subroutine check_key_operations

    subroutine check_trailing_blanks()
        character(len=20) :: padded_key
        integer(c_int32_t) :: array(4)
        logical :: exists

        padded_key = 'api_padded'
        array = [1, 2, 3, 4]
        call expect(client%put_tensor(padded_key, array), SHMSTORE_SUCCESS, 'put padded key')
        call expect(client%tensor_exists('api_padded', exists), SHMSTORE_SUCCESS, &
            'tensor_exists of the trimmed key')
        call check(exists, 'trailing blanks are not part of a key')
    end subroutine check_trailing_blanks

    subroutine check_argument_errors()
        real(c_float) :: array(2, 3)
        real(c_double) :: wrong_type(2, 3)
        real(c_float) :: wrong_shape(3, 2)
        integer :: code

        array = 1.0
        code = client%put_tensor('api_arguments', array, dims=[5])
        call expect(code, SHMSTORE_INVALID_ARGUMENT, 'put with dims of the wrong size')
        call check(index(shmstore_error_message(code), 'dims') > 0, &
            'message of wrong dims names dims')
        call print_message('wrong dims', code)

        call expect(client%put_tensor('api_arguments', array, dims=[-2, -3]), &
            SHMSTORE_INVALID_ARGUMENT, 'put with negative dims')

        call expect(client%put_tensor('api_arguments', array), SHMSTORE_SUCCESS, 'put float32')
        code = client%unpack_tensor('api_arguments', wrong_type)
        call expect(code, SHMSTORE_TENSOR_MISMATCH, 'unpack float32 into float64')
        call print_message('wrong dtype', code)
        call expect(client%unpack_tensor('api_arguments', wrong_shape), &
            SHMSTORE_TENSOR_MISMATCH, 'unpack (2,3) into (3,2)')

        code = client%put_tensor('', array)
        call expect(code, SHMSTORE_INVALID_KEY, 'put with an empty key')
        call print_message('empty key', code)
        call expect(client%put_tensor('   ', array), SHMSTORE_INVALID_KEY, &
            'put with a key of blanks only')
        call expect(client%put_tensor(repeat('k', 1025), array), SHMSTORE_INVALID_KEY, &
            'put with a key of 1025 bytes')
        call expect(client%put_tensor(repeat('k', 1024), array), SHMSTORE_SUCCESS, &
            'put with a key of 1024 bytes')
    end subroutine check_argument_errors

    subroutine check_reshape_with_dims()
        integer(c_int32_t) :: flat(6)
        integer(c_int32_t) :: matrix(2, 3)
        type(tensor_view_type) :: view
        integer(c_int32_t), pointer :: fptr(:, :)
        integer :: i

        flat = [(i, i = 1, 6)]
        call expect(client%put_tensor('api_dims', flat, dims=[2, 3]), SHMSTORE_SUCCESS, &
            'put a flat array with dims')
        call expect(client%get_tensor_view('api_dims', view), SHMSTORE_SUCCESS, 'view dims')
        call check(view%rank() == 2, 'dims set the stored rank')
        call check(all(view%shape() == [2, 3]), 'dims set the stored shape')
        call expect(view%get_pointer(fptr), SHMSTORE_SUCCESS, 'pointer of reshaped tensor')
        if (associated(fptr)) call check(fptr(2, 3) == 6, 'reshaped tensor is column-major')
        call expect(view%release(), SHMSTORE_SUCCESS, 'release dims view')

        matrix = 0
        call expect(client%unpack_tensor('api_dims', matrix), SHMSTORE_SUCCESS, &
            'unpack reshaped tensor')
        call check(all(matrix == reshape(flat, [2, 3])), 'reshaped tensor unpacks in order')
    end subroutine check_reshape_with_dims

    subroutine check_zero_sized()
        real(c_float) :: empty(0)
        real(c_float) :: empty_columns(0, 3)
        type(tensor_view_type) :: view

        call expect(client%put_tensor('api_empty', empty), SHMSTORE_SUCCESS, 'put (0)')
        call expect(client%unpack_tensor('api_empty', empty), SHMSTORE_SUCCESS, 'unpack (0)')
        call expect(client%get_tensor_view('api_empty', view), SHMSTORE_SUCCESS, 'view (0)')
        call check(view%rank() == 1, 'view (0) rank')
        call check(all(view%shape() == [0]), 'view (0) shape')
        call expect(view%release(), SHMSTORE_SUCCESS, 'release (0)')

        call expect(client%put_tensor('api_empty_columns', empty_columns), SHMSTORE_SUCCESS, &
            'put (0,3)')
        call expect(client%get_tensor_view('api_empty_columns', view), SHMSTORE_SUCCESS, &
            'view (0,3)')
        call check(all(view%shape() == [0, 3]), 'view (0,3) shape')
        call expect(view%release(), SHMSTORE_SUCCESS, 'release (0,3)')
    end subroutine check_zero_sized

    !> Puts 1 GiB, more than the arena of a test store. The store rejects the
    !> size before it reads the array, so the array is left uninitialized.
    subroutine check_out_of_memory()
        real(c_double), allocatable :: big(:)
        logical :: exists
        integer :: code

        allocate(big(134217728))
        code = client%put_tensor('api_big', big)
        call expect(code, SHMSTORE_OUT_OF_MEMORY, 'put of 1 GiB')
        call print_message('out of memory', code)
        call expect(client%tensor_exists('api_big', exists), SHMSTORE_SUCCESS, &
            'tensor_exists after a failed put')
        call check(.not. exists, 'failed put stores nothing')
    end subroutine check_out_of_memory

    subroutine check_view_outlives_key()
        real(c_double) :: array(4)
        type(tensor_view_type) :: view
        real(c_double), pointer :: fptr(:)

        array = [1.5d0, 2.5d0, 3.5d0, 4.5d0]
        call expect(client%put_tensor('api_pinned', array), SHMSTORE_SUCCESS, 'put pinned')
        call expect(client%get_tensor_view('api_pinned', view), SHMSTORE_SUCCESS, 'view pinned')
        call expect(view%get_pointer(fptr), SHMSTORE_SUCCESS, 'pointer pinned')

        call expect(client%put_tensor('api_pinned', -array), SHMSTORE_SUCCESS, 'overwrite pinned')
        if (associated(fptr)) call check(all(fptr == array), 'view survives an overwrite')
        call expect(client%delete_tensor('api_pinned'), SHMSTORE_SUCCESS, 'delete pinned')
        if (associated(fptr)) call check(all(fptr == array), 'view survives a delete')

        call expect(view%release(), SHMSTORE_SUCCESS, 'release pinned')
        call expect(view%release(), SHMSTORE_SUCCESS, 'second release does nothing')
        call expect(view%get_pointer(fptr), SHMSTORE_INVALID_ARGUMENT, 'pointer after release')
        call check(.not. associated(fptr), 'pointer after release is null')
    end subroutine check_view_outlives_key

    !> The inference entry points may not be implemented yet, so only their
    !> failure modes are checked: each must return a code and a message.
    subroutine check_inference()
        logical :: exists
        integer :: code

        code = client%set_model_from_file('api_model', 'no_such_model_file.pt', 'TORCH', 'CPU', &
            batch_size=8, min_batch_size=1, min_batch_timeout=5)
        call check(code < 0, 'set_model_from_file of a missing file fails')
        call print_message('set_model_from_file', code)

        code = client%model_exists('api_model', exists)
        call check(.not. exists, 'model_exists of a missing model is false')
        if (code /= SHMSTORE_SUCCESS) call print_message('model_exists', code)

        code = client%run_model('api_model', [character(len=8) :: 'api_in'], &
            [character(len=8) :: 'api_out'], timeout_ms=2000)
        call check(code < 0, 'run_model of a missing model fails')
        call print_message('run_model', code)

        code = client%run_script('api_script', 'forward', [character(len=8) :: 'api_in'], &
            [character(len=8) :: 'api_out'], timeout_ms=2000)
        call check(code < 0, 'run_script of a missing script fails')
        call print_message('run_script', code)
    end subroutine check_inference

    subroutine check_view_outlives_client()
        real(c_float) :: array(3)
        type(tensor_view_type) :: view
        real(c_float), pointer :: fptr(:)

        array = [10.0, 20.0, 30.0]
        call expect(client%put_tensor('api_last', array), SHMSTORE_SUCCESS, 'put last')
        call expect(client%get_tensor_view('api_last', view), SHMSTORE_SUCCESS, 'view last')

        call expect(client%destroy(), SHMSTORE_SUCCESS, 'destroy')
        call check(.not. client%is_initialized(), 'destroyed client is not initialized')
        call expect(client%destroy(), SHMSTORE_SUCCESS, 'second destroy does nothing')
        call expect(client%put_tensor('api_last', array), SHMSTORE_INVALID_ARGUMENT, &
            'put after destroy')

        call expect(view%get_pointer(fptr), SHMSTORE_SUCCESS, 'pointer after destroy')
        if (associated(fptr)) call check(all(fptr == array), 'view survives destroy')
        call expect(view%release(), SHMSTORE_SUCCESS, 'release after destroy')
    end subroutine check_view_outlives_client

end program test_api
