//! When observables are recorded: a fixed number of points spread evenly over training.

/// The training steps of `points` recording points spread evenly over `total_steps` steps,
/// step 0 (before any update) and `total_steps` (after the last) included:
/// step_i = round(i · total / (points − 1)), halves rounded up, for i = 0..points. One point
/// records only the end, `[total]`; zero points, nothing.
///
/// When `total_steps < points − 1` some steps repeat (10 steps and 21 points record steps 0,
/// 1, 1, 2, 2, …): every run keeps the same number of points, so the trajectories of short and
/// long runs line up point for point, and the recorder records a repeated step once per point.
pub fn recording_steps(points: usize, total_steps: u64) -> Vec<u64> {
    match points {
        0 => Vec::new(),
        1 => vec![total_steps],
        _ => {
            let last = (points - 1) as u128;
            // round(i·total/last) = floor((2·i·total + last) / (2·last)), exactly, in u128.
            (0..points as u128).map(|i| ((2 * i * total_steps as u128 + last) / (2 * last)) as u64).collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twenty_one_points_over_a_thousand_steps_are_every_fiftieth() {
        let steps = recording_steps(21, 1000);
        assert_eq!(steps.len(), 21);
        assert_eq!(steps, (0..=20).map(|i| i * 50).collect::<Vec<u64>>());
    }

    #[test]
    fn uneven_spacing_rounds_to_the_nearest_step() {
        // 5·i/2 for i = 0..2: 0, 2.5 → 3, 5.
        assert_eq!(recording_steps(3, 5), [0, 3, 5]);
        // 10·i/3: 0, 3.33 → 3, 6.67 → 7, 10.
        assert_eq!(recording_steps(4, 10), [0, 3, 7, 10]);
        // 7·i/5: 0, 1.4, 2.8, 4.2, 5.6, 7.
        assert_eq!(recording_steps(6, 7), [0, 1, 3, 4, 6, 7]);
    }

    #[test]
    fn short_runs_repeat_steps_and_edge_cases_hold() {
        // 10·i/20 = i/2: 0, 0.5 → 1, 1, 1.5 → 2, 2, …, 10.
        let steps = recording_steps(21, 10);
        assert_eq!(&steps[..6], [0, 1, 1, 2, 2, 3]);
        assert_eq!(steps[20], 10);
        assert_eq!(recording_steps(3, 0), [0, 0, 0]);
        assert_eq!(recording_steps(1, 42), [42]);
        assert_eq!(recording_steps(0, 42), Vec::<u64>::new());
        assert_eq!(recording_steps(2, 42), [0, 42]);
        assert_eq!(recording_steps(3, u64::MAX), [0, u64::MAX / 2 + 1, u64::MAX]);
    }
}
