!> Ocean proxy: a tracer stirred by a drifting eddy field on a global
!> latitude-longitude grid, with an eddy diffusivity taken from a neural
!> network that predicts eddy kinetic energy (EKE) for every column, every step.
!>
!> Each rank owns a band of latitudes and, every step:
!>   1. computes four input features per column from its evolving fields,
!>   2. puts them into the store (one copy),
!>   3. asks the store's inference workers to run the EKE model on them
!>      (requests from all ranks are batched together by the workers),
!>   4. unpacks the predicted EKE and uses it as the tracer's diffusivity.
!> It prints the time of put, run_model and unpack per step, the same
!> breakdown as published for the MOM6 ML-EKE runs, and inferences per second.
!>
!> The rank and rank count come from SHMSTORE_RANK / SHMSTORE_NRANKS (set by
!> `shmstore launch`) or from the MPI launcher's environment, so the program
!> needs no MPI library: the tiles exchange nothing.
!>
!> Usage: ocean_proxy [--nx N] [--ny N] [--steps N] [--model KEY]
program ocean_proxy
    use, intrinsic :: iso_fortran_env, only: int64, real32, real64, output_unit, error_unit
    use shmstore_client, only: client_type, shmstore_error_message, SHMSTORE_SUCCESS
    implicit none

    real(real64), parameter :: pi = 3.14159265358979323846_real64
    integer :: nx, ny, steps, rank, nranks, j_first, j_last, nyl, ncol
    character(len=64) :: model_key, feature_key, eke_key, tracer_key, step_key, timing_key
    type(client_type) :: client
    real(real32), allocatable :: features(:, :), eke(:, :)
    real(real64), allocatable :: tracer(:, :), tracer_new(:, :), lon(:), lat(:)
    real(real64), allocatable :: u(:, :), v(:, :), vorticity(:, :), strain(:, :)
    real(real64), allocatable :: timings(:, :)
    real(real64) :: put_s, run_s, unpack_s, total_ml_s, time
    integer(int64) :: t0, t1, t2, t3, clock_rate
    integer :: step, code

    call read_arguments(nx, ny, steps, model_key)
    call read_rank(rank, nranks)
    call split_rows(ny, rank, nranks, j_first, j_last)
    nyl = j_last - j_first + 1
    ncol = nx * nyl

    write (feature_key, '(a, i0)') 'eke_features_r', rank
    write (eke_key, '(a, i0)') 'eke_pred_r', rank
    write (tracer_key, '(a, i0)') 'tracer_r', rank
    write (step_key, '(a, i0)') 'step_r', rank
    write (timing_key, '(a, i0)') 'timings_r', rank

    allocate (features(ncol, 4), eke(ncol, 1))
    allocate (tracer(nx, nyl), tracer_new(nx, nyl), lon(nx), lat(nyl))
    allocate (u(nx, nyl), v(nx, nyl), vorticity(nx, nyl), strain(nx, nyl))
    allocate (timings(3, steps))
    timings = 0
    call make_grid(nx, ny, j_first, lon, lat)
    call initial_tracer(lon, lat, tracer)

    code = client%initialize()
    call check(code, 'connecting to the store')
    code = client%put_tensor('grid_shape', [nx, ny, nranks], [3])
    call check(code, 'putting the grid shape')

    if (rank == 0) then
        write (output_unit, '(a, i0, a, i0, a, i0, a, i0, a)') 'ocean proxy: ', nx, ' x ', ny, &
            ' grid, ', nranks, ' ranks, ', steps, ' steps'
        write (output_unit, '(a)') '  step   put ms   run_model ms   unpack ms   inferences/s'
    end if
    call system_clock(count_rate=clock_rate)

    total_ml_s = 0
    do step = 1, steps
        time = real(step, real64)
        call compute_flow(lon, lat, time, u, v, vorticity, strain)
        call compute_features(vorticity, strain, tracer, lat, features)

        call system_clock(t0)
        code = client%put_tensor(trim(feature_key), features)
        call check(code, 'putting the features')
        call system_clock(t1)
        code = client%run_model(trim(model_key), [feature_key], [eke_key])
        call check(code, 'running the EKE model')
        call system_clock(t2)
        code = client%unpack_tensor(trim(eke_key), eke)
        call check(code, 'unpacking the predicted EKE')
        call system_clock(t3)

        put_s = real(t1 - t0, real64) / clock_rate
        run_s = real(t2 - t1, real64) / clock_rate
        unpack_s = real(t3 - t2, real64) / clock_rate
        total_ml_s = total_ml_s + put_s + run_s + unpack_s
        timings(:, step) = [put_s, run_s, unpack_s]
        write (output_unit, '(i6, f9.3, f15.3, f12.3, f15.0)') step, 1e3 * put_s, &
            1e3 * run_s, 1e3 * unpack_s, ncol / (put_s + run_s + unpack_s)
        flush (output_unit)

        call step_tracer(u, v, eke, tracer, tracer_new)
        tracer = tracer_new

        ! Publish the state for the analysis process: fields first, the step
        ! counter last, so a reader that sees step N finds step N's fields.
        code = client%put_tensor(trim(tracer_key), tracer)
        call check(code, 'putting the tracer')
        code = client%put_tensor(trim(timing_key), timings)
        call check(code, 'putting the timings')
        code = client%put_tensor(trim(step_key), [step, j_first, j_last, nx], [4])
        call check(code, 'putting the step counter')
    end do

    write (output_unit, '(a, i0, a, f12.0, a)') 'rank ', rank, ' done: ', &
        real(ncol, real64) * steps / total_ml_s, ' inferences/s including put and unpack'
    code = client%destroy()

contains

    !> Stops the program with the store's message when code is an error.
    subroutine check(code, action)
        integer, intent(in) :: code
        character(len=*), intent(in) :: action

        if (code == SHMSTORE_SUCCESS) return
        write (error_unit, '(a, i0, a, a, a, a)') 'ocean proxy rank ', rank, ': failed ', &
            action, ': ', shmstore_error_message(code)
        error stop 1
    end subroutine check

    !> Reads --nx, --ny, --steps and --model from the command line.
    subroutine read_arguments(nx, ny, steps, model_key)
        integer, intent(out) :: nx, ny, steps
        character(len=*), intent(out) :: model_key
        character(len=64) :: name, value
        integer :: i, status

        nx = 360
        ny = 180
        steps = 10
        model_key = 'eke'
        i = 1
        do while (i <= command_argument_count())
            call get_command_argument(i, name)
            call get_command_argument(i + 1, value)
            select case (trim(name))
            case ('--nx')
                read (value, *, iostat=status) nx
            case ('--ny')
                read (value, *, iostat=status) ny
            case ('--steps')
                read (value, *, iostat=status) steps
            case ('--model')
                model_key = value
                status = 0
            case default
                write (error_unit, '(a, a)') 'ocean proxy: unknown argument ', trim(name)
                error stop 2
            end select
            if (status /= 0) then
                write (error_unit, '(a, a, a, a)') 'ocean proxy: invalid value ', trim(value), &
                    ' for ', trim(name)
                error stop 2
            end if
            i = i + 2
        end do
    end subroutine read_arguments

    !> Reads this process's rank and the rank count from the launcher's
    !> environment: shmstore launch, Open MPI, MPICH/PMI or Slurm.
    subroutine read_rank(rank, nranks)
        integer, intent(out) :: rank, nranks
        character(len=*), parameter :: rank_names(4) = [character(len=20) :: &
            'SHMSTORE_RANK', 'OMPI_COMM_WORLD_RANK', 'PMI_RANK', 'SLURM_PROCID']
        character(len=*), parameter :: size_names(4) = [character(len=20) :: &
            'SHMSTORE_NRANKS', 'OMPI_COMM_WORLD_SIZE', 'PMI_SIZE', 'SLURM_NTASKS']
        character(len=32) :: value
        integer :: i, length, status

        rank = 0
        nranks = 1
        do i = 1, size(rank_names)
            call get_environment_variable(trim(rank_names(i)), value, length, status)
            if (status /= 0 .or. length == 0) cycle
            read (value, *) rank
            call get_environment_variable(trim(size_names(i)), value, length, status)
            if (status == 0 .and. length > 0) read (value, *) nranks
            exit
        end do
    end subroutine read_rank

    !> Splits rows 1..ny into nranks bands as even as possible.
    subroutine split_rows(ny, rank, nranks, j_first, j_last)
        integer, intent(in) :: ny, rank, nranks
        integer, intent(out) :: j_first, j_last
        integer :: base, extra

        base = ny / nranks
        extra = mod(ny, nranks)
        j_first = rank * base + min(rank, extra) + 1
        j_last = j_first + base - 1
        if (rank < extra) j_last = j_last + 1
    end subroutine split_rows

    !> Sets cell-centre longitudes (0..360) and latitudes (-80..80) in degrees.
    subroutine make_grid(nx, ny, j_first, lon, lat)
        integer, intent(in) :: nx, ny, j_first
        real(real64), intent(out) :: lon(:), lat(:)
        integer :: i, j

        do i = 1, nx
            lon(i) = 360.0_real64 * (i - 0.5_real64) / nx
        end do
        do j = 1, size(lat)
            lat(j) = -80.0_real64 + 160.0_real64 * (j_first + j - 1 - 0.5_real64) / ny
        end do
    end subroutine make_grid

    !> Starts the tracer as a meridional gradient with zonal ripples.
    subroutine initial_tracer(lon, lat, tracer)
        real(real64), intent(in) :: lon(:), lat(:)
        real(real64), intent(out) :: tracer(:, :)
        integer :: i, j

        do j = 1, size(lat)
            do i = 1, size(lon)
                tracer(i, j) = cos(lat(j) * pi / 180) + &
                    0.1_real64 * sin(6 * lon(i) * pi / 180) * cos(3 * lat(j) * pi / 180)
            end do
        end do
    end subroutine initial_tracer

    !> Evaluates the drifting eddy field psi = sum of three waves and its
    !> velocity, relative vorticity and strain, in grid units per step.
    subroutine compute_flow(lon, lat, time, u, v, vorticity, strain)
        real(real64), intent(in) :: lon(:), lat(:), time
        real(real64), intent(out) :: u(:, :), v(:, :), vorticity(:, :), strain(:, :)
        real(real64), parameter :: amplitude(3) = [0.25_real64, 0.15_real64, 0.10_real64]
        real(real64), parameter :: k(3) = [4.0_real64, 9.0_real64, 15.0_real64]
        real(real64), parameter :: l(3) = [3.0_real64, 7.0_real64, 11.0_real64]
        real(real64), parameter :: drift(3) = [0.02_real64, -0.035_real64, 0.05_real64]
        real(real64) :: x, y, phase, s, c, sy, cy
        integer :: i, j, m

        u = 0
        v = 0
        vorticity = 0
        strain = 0
        do j = 1, size(lat)
            y = lat(j) * pi / 180
            do i = 1, size(lon)
                x = lon(i) * pi / 180
                do m = 1, 3
                    phase = k(m) * x - drift(m) * time
                    s = sin(phase)
                    c = cos(phase)
                    sy = sin(l(m) * y)
                    cy = cos(l(m) * y)
                    u(i, j) = u(i, j) + amplitude(m) * l(m) * s * sy / l(3)
                    v(i, j) = v(i, j) + amplitude(m) * k(m) * c * cy / k(3)
                    vorticity(i, j) = vorticity(i, j) - amplitude(m) * (k(m)**2 + l(m)**2) * s * cy
                    strain(i, j) = strain(i, j) + amplitude(m) * k(m) * l(m) * c * sy
                end do
            end do
        end do
    end subroutine compute_flow

    !> Fills the model's four input features per column (column index runs
    !> over longitude fastest). The scales put the features in the range the
    !> published ML-EKE model was trained on: the first, second and fourth
    !> enter the model through sign(x) * (log|x| + 36).
    subroutine compute_features(vorticity, strain, tracer, lat, features)
        real(real64), intent(in) :: vorticity(:, :), strain(:, :), tracer(:, :), lat(:)
        real(real32), intent(out) :: features(:, :)
        integer :: i, j, n, nx

        nx = size(vorticity, 1)
        do j = 1, size(vorticity, 2)
            do i = 1, nx
                n = (j - 1) * nx + i
                features(n, 1) = real(2.5e-3_real64 * exp(0.05_real64 * abs(vorticity(i, j))), real32)
                features(n, 2) = real(2.5e-3_real64 * exp(0.1_real64 * abs(strain(i, j))), real32)
                features(n, 3) = real(1.0_real64 + tracer(i, j) * cos(lat(j) * pi / 180), real32)
                features(n, 4) = real(sign(1.0e-7_real64, vorticity(i, j)) * &
                    (1 + abs(strain(i, j))), real32)
            end do
        end do
    end subroutine compute_features

    !> Advances the tracer one step: upwind advection by (u, v) plus
    !> diffusion whose coefficient grows with the square root of the
    !> predicted EKE. Periodic in longitude, no flux across the band's edges.
    subroutine step_tracer(u, v, eke, tracer, tracer_new)
        real(real64), intent(in) :: u(:, :), v(:, :), tracer(:, :)
        real(real32), intent(in) :: eke(:, :)
        real(real64), intent(out) :: tracer_new(:, :)
        real(real64) :: kappa, west, east, south, north, dtdx, dtdy
        integer :: i, j, nx, nyl, iw, ie

        nx = size(tracer, 1)
        nyl = size(tracer, 2)
        do j = 1, nyl
            do i = 1, nx
                iw = merge(nx, i - 1, i == 1)
                ie = merge(1, i + 1, i == nx)
                west = tracer(iw, j)
                east = tracer(ie, j)
                south = tracer(i, max(j - 1, 1))
                north = tracer(i, min(j + 1, nyl))
                if (u(i, j) > 0) then
                    dtdx = tracer(i, j) - west
                else
                    dtdx = east - tracer(i, j)
                end if
                if (v(i, j) > 0) then
                    dtdy = tracer(i, j) - south
                else
                    dtdy = north - tracer(i, j)
                end if
                kappa = 0.1_real64 * min(1.0_real64, &
                    sqrt(exp(real(eke((j - 1) * nx + i, 1), real64))) / 0.1_real64)
                tracer_new(i, j) = tracer(i, j) - u(i, j) * dtdx - v(i, j) * dtdy + &
                    kappa * (west + east + south + north - 4 * tracer(i, j))
            end do
        end do
    end subroutine step_tracer

end program ocean_proxy
