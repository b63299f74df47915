#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif
@testable import FileLocking
import Subprocesses
import Synchronization
import Testing

/// The folder watches behind marker-lock waits: one inotify instance per process serves them all.
@Suite("Folder watch", .ownThreads)
struct FolderWatchTests {
    /// For each open inotify descriptor of this process (`anon_inode:inotify`), the inodes (hex,
    /// as fdinfo writes them) of the folders it watches.
    static func inotifyInstances() -> [Int32: [String]] {
        var instances: [Int32: [String]] = [:]
        for entry in System.folderEntries("/proc/self/fd") {
            var buffer = [CChar](repeating: 0, count: 256)
            let count = readlink("/proc/self/fd/" + entry, &buffer, buffer.count - 1)
            guard count > 0, let descriptor = Int32(entry) else { continue }
            let target = String(decoding: buffer.prefix(count).map { UInt8(bitPattern: $0) }, as: UTF8.self)
            guard target == "anon_inode:inotify" else { continue }
            guard case .success(let bytes) = System.readWholeFile("/proc/self/fdinfo/" + entry) else { continue }
            instances[descriptor] = String(decoding: bytes, as: UTF8.self).split(separator: "\n").compactMap { line in
                guard line.hasPrefix("inotify wd:"), let field = line.split(separator: " ").first(where: { $0.hasPrefix("ino:") })
                else { return nil }
                return String(field.dropFirst(4))
            }
        }
        return instances
    }

    /// Whether process `pid` has an inotify watch on the folder with `inode` (hex).
    static func process(_ pid: Int32, watches inode: String) -> Bool {
        System.folderEntries("/proc/\(pid)/fdinfo").contains { entry in
            guard case .success(let bytes) = System.readWholeFile("/proc/\(pid)/fdinfo/" + entry) else { return false }
            return String(decoding: bytes, as: UTF8.self).contains(" ino:\(inode) ")
        }
    }

    static func inode(_ path: String) throws -> String {
        String(try System.lstat(CPath(path)).get().inode, radix: 16)
    }

    /// How many kernel watches, over every inotify instance of the process, are on `folder`.
    static func kernelWatches(on folder: String) throws -> Int {
        let inode = try inode(folder)
        return inotifyInstances().values.reduce(0) { $0 + $1.filter { $0 == inode }.count }
    }

    /// Six folders, each with a waiting task or thread whose pause only the watch can end (an
    /// hour long), and two more waiters on two names in one of them: one inotify instance holds
    /// every folder's watch, and removing a marker wakes its own waiter, not the others.
    @Test func oneInstanceServesManySimultaneousWaitersOnDifferentFolders() async throws {
        let folders = try (0..<6).map { _ in try TemporaryFolder() }
        let paths = folders.map { $0.file("x.lock") } + [folders[0].file("y.lock")]
        let primitives = try paths.map {
            SoftPrimitive(lockPath: try LockPath($0), filePermissions: nil, lifetime: nil, pollInterval: .seconds(3600))
        }
        let attempts = try primitives.map { try $0.begin(.exclusive) }
        for (primitive, attempt) in zip(primitives, attempts) {
            // The first pause makes the watch and returns at once.
            primitive.prepareToWait(attempt)
            try await primitive.pause(attempt, upTo: .seconds(3600))
        }
        let woke = paths.map { _ in ThreadResult() }
        var tasks: [Task<Void, any Error>] = []
        for index in paths.indices {
            let primitive = primitives[index]
            let attempt = attempts[index]
            let result = woke[index]
            if index.isMultiple(of: 2) {
                tasks.append(
                    Task {
                        try await primitive.pause(attempt, upTo: .seconds(3600))
                        result.set("woke")
                    })
            } else {
                _ = Threads.spawnDetached {
                    primitive.pause(attempt, upTo: .seconds(3600))
                    result.set("woke")
                }
            }
        }
        let inodes = try folders.map { try Self.inode($0.path) }
        let instances = Self.inotifyInstances().filter { !Set($0.value).isDisjoint(with: inodes) }
        #expect(instances.count == 1, "inotify instances watching the test folders: \(instances)")
        #expect(Set(instances.values.first ?? []).isSuperset(of: inodes))

        // Wake them one at a time, the name sharing a folder first; the others keep waiting.
        var released: Set<Int> = []
        for index in [paths.count - 1] + Array(0..<paths.count - 1) {
            writeFile(paths[index], "1\nhost\n")
            #expect(unlink(paths[index]) == 0)
            if !(await eventually("the waiter of \(paths[index]) woke", timeout: 120, { woke[index].peek() != nil })) { break }
            released.insert(index)
            let wokenEarly = woke.indices.filter { !released.contains($0) && woke[$0].peek() != nil }
            #expect(wokenEarly.isEmpty, "woken by another folder's or name's change: \(wokenEarly)")
        }
        #expect(woke.allSatisfy { $0.peek() != nil })
        for task in tasks { task.cancel() }
    }

    /// Watches on one folder share its kernel watch; dropping the last removes it (the instance
    /// itself is kept for the next wait: closing one waits for a kernel grace period).
    @Test func watchesOnOneFolderShareOneKernelWatchRemovedWithTheLast() async throws {
        let folder = try TemporaryFolder()
        var watches: [FolderWatch] = []
        for index in 0..<20 {
            let watch = try #require(FolderWatch(folder: CPath(folder.path)))
            if index.isMultiple(of: 2) {
                _ = try await watch.changed(within: .milliseconds(1))
            } else {
                _ = watch.wait(upTo: .milliseconds(1))
            }
            watches.append(watch)
        }
        #expect(try Self.kernelWatches(on: folder.path) == 1)
        watches.removeLast(19)
        #expect(try Self.kernelWatches(on: folder.path) == 1, "one watch is left")
        watches.removeAll()
        #expect(await eventually("the folder's kernel watch was removed") { (try? Self.kernelWatches(on: folder.path)) == 0 })
    }

    /// A child forked without exec must not use its parent's instance (the parent's reader would
    /// take the child's events, and the child's watches would change the parent's): its first
    /// watch closes the inherited descriptor and makes an instance of its own, which works; the
    /// parent's still works afterwards.
    @Test func aForkedChildMakesAnInstanceOfItsOwn() throws {
        let parentFolder = try TemporaryFolder()
        let childFolder = try TemporaryFolder()
        let parentWatch = try #require(FolderWatch(folder: CPath(parentFolder.path), name: Array("p".utf8)))
        let childFolderPath = childFolder.path
        let parentInode = try Self.inode(parentFolder.path)
        let childInode = try Self.inode(childFolder.path)
        // The child's code runs here first: code run for the first time in the child makes the
        // runtime's type metadata, whose lock another thread may have held at the fork.
        _ = Self.inotifyInstances()
        let child = forkChild()
        if child == 0 {
            guard let watch = FolderWatch(folder: CPath(childFolderPath), name: Array("c".utf8)) else { _exit(10) }
            let instances = Self.inotifyInstances()
            // The inherited instance (watching the parent's folder) is closed; one of its own
            // watches the child's folder.
            guard !instances.values.contains(where: { $0.contains(parentInode) }) else { _exit(11) }
            guard instances.values.filter({ $0.contains(childInode) }).count == 1 else { _exit(12) }
            writeFile(childFolderPath + "/c", "")
            unlink(childFolderPath + "/c")
            guard watch.wait(upTo: .seconds(60)) else { _exit(13) }
            _exit(0)
        }
        let status = waitForChild(child)
        #expect(status == 0, "child: 10 no watch, 11 uses the parent's instance, 12 no instance of its own, 13 not woken (\(status))")
        writeFile(parentFolder.file("p"), "")
        unlink(parentFolder.file("p"))
        #expect(parentWatch.wait(upTo: .seconds(60)), "the parent's watch still works")
    }

    /// Threads make and drop watches on one folder while others wait for their own name's
    /// removal: every waiter is woken (a second watch on a folder must add to the kernel watch's
    /// mask, not replace it, which passes through an empty mask that a removal can fall into),
    /// and no kernel watch is left.
    @Test func watchesMadeWhileNamesGoLoseNoWakeUp() async {
        // In a process of its own (an exit test): its spinning threads would otherwise hold up the
        // other tests of this process for as long as it runs.
        await #expect(processExitsWith: .success) {
            let folder = try TemporaryFolder()
            final class Counts: Sendable {
                let missed = Atomic(0)
                let done = Atomic(0)
                let isChurning = Atomic(true)
            }
            let counts = Counts()
            for _ in 0..<4 {
                _ = Threads.spawnDetached {
                    while counts.isChurning.load(ordering: .relaxed) { _ = FolderWatch(folder: CPath(folder.path)) }
                    counts.done.add(1, ordering: .relaxed)
                }
            }
            for thread in 0..<4 {
                _ = Threads.spawnDetached {
                    for round in 0..<500 {
                        let name = "t\(thread)-\(round)"
                        guard let watch = FolderWatch(folder: CPath(folder.path), name: Array(name.utf8)) else {
                            counts.missed.add(1, ordering: .relaxed)
                            continue
                        }
                        writeFile(folder.file(name), "")
                        unlink(folder.file(name))
                        if !watch.wait(upTo: .seconds(10)) { counts.missed.add(1, ordering: .relaxed) }
                    }
                    counts.done.add(1, ordering: .relaxed)
                }
            }
            // 2: the waiting threads did not finish; 3: a wait was not woken; 4: a kernel watch is left.
            let deadline = MonotonicInstant.now.advanced(by: .seconds(600))
            while counts.done.load(ordering: .relaxed) < 4 && MonotonicInstant.now < deadline { Threads.sleep(.milliseconds(10)) }
            guard counts.done.load(ordering: .relaxed) >= 4 else { exit(2) }
            counts.isChurning.store(false, ordering: .relaxed)
            while counts.done.load(ordering: .relaxed) < 8 { Threads.sleep(.milliseconds(10)) }
            guard counts.missed.load(ordering: .relaxed) == 0 else { exit(3) }
            exit((try? Self.kernelWatches(on: folder.path)) == 0 ? 0 : 4)
        }
    }

    /// A child forked without exec that closes the inherited inotify descriptor's number and
    /// reuses it for a file of its own keeps that file: the inherited instance is closed at the
    /// fork, not at the child's first watch.
    @Test func aForkedChildKeepsAFileOnTheInheritedDescriptorsNumber() throws {
        let folder = try TemporaryFolder()
        let parentWatch = try #require(FolderWatch(folder: CPath(folder.path), name: Array("p".utf8)))
        let inherited = try #require(Self.inotifyInstances().keys.first)
        let logPath = folder.file("child.log")
        let child = forkChild()
        if child == 0 {
            // The number is free in the child (closed at the fork); the child's file takes it
            // (`dup2`: other numbers below it may be free too, in a test process with threads).
            let opened = open(logPath, O_WRONLY | O_CREAT | O_CLOEXEC, 0o644)
            guard opened >= 0, dup2(opened, inherited) == inherited else { _exit(10) }
            if opened != inherited { close(opened) }
            let log = inherited
            guard FolderWatch(folder: CPath(folder.path), name: Array("c".utf8)) != nil else { _exit(11) }
            _exit(write(log, "kept", 4) == 4 ? 0 : 12)
        }
        let status = waitForChild(child)
        #expect(status == 0, "child: 10 no file at the number, 11 no watch, 12 its file was closed (\(status))")
        _ = parentWatch
    }
}
