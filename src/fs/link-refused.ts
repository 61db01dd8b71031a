/**
 * The one list of errno codes that mean "this filesystem will not link (or clone) this file here",
 * after which a copy does the job: checkout's clone and hardlink imports, a direct checkout's
 * publish of a verified file, and tar unpack's hardlinks all fall back on exactly these.
 *
 * EXDEV: the two names are on different filesystems. EPERM: the filesystem has no hard links
 * (vfat, some FUSE), or protected_hardlinks refuses a link to a file the user does not own.
 * EMLINK: the file has as many links as the filesystem allows. ENOTSUP/EOPNOTSUPP: no reflinks
 * (tmpfs, ext4). ENOSYS, EINVAL: FICLONE not implemented, or refused for this file (btrfs
 * nodatasum); link(2) does not return them, so they cost nothing there.
 *
 * Never here, since a copy must not paper over them: EEXIST (the name is taken: nothing may
 * replace it), ENOENT and ENOTDIR (the source or the parent is gone), EACCES (no permission: a copy
 * would be refused too, or would hide it), ENOSPC, EDQUOT, EROFS, EIO (a real failure to report).
 */
export const LINK_REFUSED: ReadonlySet<string> = new Set(['EXDEV', 'EPERM', 'EMLINK', 'ENOTSUP', 'EOPNOTSUPP', 'ENOSYS', 'EINVAL']);

/** Whether `err` is an OS error that means a copy should be made instead of a link or clone. */
export function linkRefused(err: unknown): boolean {
  return LINK_REFUSED.has((err as NodeJS.ErrnoException)?.code ?? '');
}
