// The monotonic clock the engine measures waits with.

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Nanoseconds of `CLOCK_MONOTONIC`, which does not jump with the wall clock.
package struct MonotonicInstant: Comparable, Sendable {
    package var nanoseconds: UInt64

    package init(nanoseconds: UInt64) { self.nanoseconds = nanoseconds }

    package static var now: MonotonicInstant {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return MonotonicInstant(nanoseconds: UInt64(time.tv_sec) &* 1_000_000_000 &+ UInt64(time.tv_nsec))
    }

    package static func < (lhs: Self, rhs: Self) -> Bool { lhs.nanoseconds < rhs.nanoseconds }

    package func advanced(by duration: Duration) -> MonotonicInstant {
        let delta = duration.totalNanoseconds
        if delta <= 0 { return self }
        let (sum, overflow) = nanoseconds.addingReportingOverflow(UInt64(clamping: delta))
        return MonotonicInstant(nanoseconds: overflow ? .max : sum)
    }

    package func duration(since earlier: MonotonicInstant) -> Duration {
        guard self > earlier else { return .zero }
        return .nanoseconds(Int64(clamping: nanoseconds - earlier.nanoseconds))
    }
}

extension Duration {
    /// The duration in whole nanoseconds (truncated toward zero), saturating at `Int64.min` and
    /// `Int64.max` (about 292 years either way).
    ///
    /// A `Duration` reaches far beyond that (`.seconds(Int64.max) * 1000`), and its `components`
    /// trap once the seconds no longer fit an `Int64`, so the range is checked by comparison first.
    package var totalNanoseconds: Int64 {
        if self >= .nanoseconds(Int64.max) { return .max }
        if self <= .nanoseconds(Int64.min) { return .min }
        // Within ±292 years: the seconds fit, and so does the sum.
        let (seconds, attoseconds) = components
        let (scaled, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        let (sum, sumOverflow) = scaled.addingReportingOverflow(attoseconds / 1_000_000_000)
        if overflow || sumOverflow { return self < .zero ? .min : .max }
        return sum
    }
}
