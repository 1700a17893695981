// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity ^0.8.12;

/// @title Reputation: the upload and download totals of one tracker instance's users.
/// @notice Keeps the original PBTS ABI (addUser, updateUser, getUserData, migrateUserData,
/// allUsers, owner, referrerReputation, setOffchainDataUrl/getOffchainDataUrl) and fixes it:
/// every write emits an event keyed by keccak256(username); addUser never overwrites; every write,
/// migration included, is the owner's; migration walks the whole referrer chain; creditUsers
/// applies a tracker's batch of verified credit in one transaction, exactly once.
///
/// A tracker instance owns one contract. A successor instance (after a failover, or a move to
/// another machine) deploys a new contract whose referrer is the old one; users are carried over
/// from the chain of referrers the first time the successor writes them, or on request.
contract Reputation {
    struct UserData {
        string username;
        string salt;
        bytes32 passwordHash;
        uint256 downloadSize;
        uint256 uploadSize;
    }

    /// Referrers walked at most by a migration: bounds the gas, and a cycle cannot loop.
    uint256 public constant MAX_REFERRER_DEPTH = 16;

    /// The tracker account allowed to write.
    address public owner;
    /// The previous instance's contract (address(0) for none).
    address public referrerReputation;
    /// Users by name. A user exists when its passwordHash is non-zero.
    mapping(string => UserData) public allUsers;
    /// Where the instance publishes off-chain data (per-torrent stats, receipts).
    string public offchainDataUrl;
    /// The last batch applied by creditUsers; batches apply in order, each once.
    uint64 public lastBatchId;

    /// A user was created here (addUser, or a first credit for a user found in no referrer).
    event UserAdded(bytes32 indexed userKey, string username, uint256 downloadSize, uint256 uploadSize);
    /// A user's totals were set (updateUser, updateUsers).
    event UserUpdated(bytes32 indexed userKey, string username, uint256 downloadSize, uint256 uploadSize);
    /// A user was copied from a contract in the referrer chain.
    event UserMigrated(
        bytes32 indexed userKey, string username, address indexed source, uint256 downloadSize, uint256 uploadSize
    );
    /// Verified credit was added to a user's totals (creditUsers).
    event UserCredited(
        bytes32 indexed userKey,
        string username,
        uint256 downloadDelta,
        uint256 uploadDelta,
        uint256 downloadSize,
        uint256 uploadSize
    );
    /// A creditUsers batch was applied.
    event BatchApplied(uint64 indexed batchId, uint256 users);
    /// The off-chain data URL changed.
    event OffchainDataUrlSet(string url);

    // Custom errors instead of `require` strings: callers decode them by type (pbts-chain's
    // `sol!` bindings) rather than matching texts, each carries the values that explain it, and
    // they cost less bytecode than the strings did.

    /// A write from an account other than the owner.
    error NotOwner(address caller, address owner);
    /// The referrer given to the constructor is an account without code.
    error ReferrerNotContract(address referrer);
    /// The referrer given to the constructor has code but does not answer owner().
    error ReferrerNotReputation(address referrer);
    /// A user would be created with a zero passwordHash (zero marks "no such user").
    error ZeroPasswordHash(string username);
    /// addUser or migrateUserData for a user that already exists here.
    error UserExists(string username);
    /// updateUser or updateUsers for a user that does not exist here.
    error UserDoesNotExist(string username);
    /// The arrays of a batch differ in length: `expected` usernames, `got` entries in another.
    error LengthMismatch(uint256 expected, uint256 got);
    /// A creditUsers batch beyond lastBatchId + 1 (an earlier batch is missing).
    error BatchOutOfOrder(uint64 expected, uint64 got);

    modifier onlyOwner() {
        if (msg.sender != owner) revert NotOwner(msg.sender, owner);
        _;
    }

    /// @param _creator The owner (the factory passes its caller).
    /// @param _referrerReputation The previous contract, or address(0). Anything else that is not
    /// a contract answering owner() is refused (the original dropped it silently, so a tracker
    /// believed it had a referrer it did not have).
    constructor(address _creator, address _referrerReputation) {
        owner = _creator;
        if (_referrerReputation != address(0)) {
            if (_referrerReputation.code.length == 0) {
                revert ReferrerNotContract(_referrerReputation);
            }
            try Reputation(_referrerReputation).owner() returns (address) {
                referrerReputation = _referrerReputation;
            } catch {
                revert ReferrerNotReputation(_referrerReputation);
            }
        }
    }

    /// A user's record; the zero record when absent here (referrers are not consulted).
    function getUserData(string calldata username) external view returns (UserData memory) {
        return allUsers[username];
    }

    /// A user's record here, or else the first one found up the referrer chain.
    /// @return found Whether a record exists. @return source The contract holding it.
    function findUser(string calldata username)
        external
        view
        returns (bool found, address source, UserData memory data)
    {
        if (allUsers[username].passwordHash != 0) {
            return (true, address(this), allUsers[username]);
        }
        return _findInReferrers(username);
    }

    /// Creates a user. Refuses to overwrite an existing one (the original silently did).
    function addUser(
        string calldata username,
        string calldata salt,
        bytes32 passwordHash,
        uint256 downloadSize,
        uint256 uploadSize
    ) external onlyOwner {
        if (passwordHash == 0) revert ZeroPasswordHash(username);
        UserData storage u = allUsers[username];
        if (u.passwordHash != 0) revert UserExists(username);
        u.username = username;
        u.salt = salt;
        u.passwordHash = passwordHash;
        u.downloadSize = downloadSize;
        u.uploadSize = uploadSize;
        emit UserAdded(keccak256(bytes(username)), username, downloadSize, uploadSize);
    }

    /// Sets a user's totals (absolute values).
    function updateUser(string calldata username, uint256 downloadSize, uint256 uploadSize)
        external
        onlyOwner
    {
        _update(username, downloadSize, uploadSize);
    }

    /// Sets many users' totals in one transaction; all or nothing.
    function updateUsers(
        string[] calldata usernames,
        uint256[] calldata downloadSizes,
        uint256[] calldata uploadSizes
    ) external onlyOwner {
        uint256 n = usernames.length;
        if (downloadSizes.length != n) revert LengthMismatch(n, downloadSizes.length);
        if (uploadSizes.length != n) revert LengthMismatch(n, uploadSizes.length);
        for (uint256 i = 0; i < n; i++) {
            _update(usernames[i], downloadSizes[i], uploadSizes[i]);
        }
    }

    /// Copies a user from the nearest contract up the referrer chain that has it.
    /// @return migrated False when no referrer has the user (nothing changes).
    function migrateUserData(string calldata username) external onlyOwner returns (bool migrated) {
        if (allUsers[username].passwordHash != 0) revert UserExists(username);
        (bool found, address source, UserData memory data) = _findInReferrers(username);
        if (found) {
            _store(username, data, source);
        }
        return found;
    }

    /// Adds a batch of verified credit. Each user missing here is first carried over from the
    /// referrer chain when a referrer holds the same name with the same passwordHash (the
    /// tracker puts sha256 of the user's BLS public key there, so a namesake with another key
    /// inherits nothing), and otherwise created at zero.
    ///
    /// Batches apply exactly once and in order: a batch id at or below lastBatchId is a replay
    /// (a tracker resending after a crash) and changes nothing; one beyond lastBatchId + 1 is
    /// refused, since applying it would make the missing batch look like a replay.
    /// @return applied False for a replay.
    function creditUsers(
        uint64 batchId,
        string[] calldata usernames,
        bytes32[] calldata passwordHashes,
        uint256[] calldata downloadDeltas,
        uint256[] calldata uploadDeltas
    ) external onlyOwner returns (bool applied) {
        if (batchId <= lastBatchId) {
            return false;
        }
        if (batchId != lastBatchId + 1) revert BatchOutOfOrder(lastBatchId + 1, batchId);
        uint256 n = usernames.length;
        if (passwordHashes.length != n) revert LengthMismatch(n, passwordHashes.length);
        if (downloadDeltas.length != n) revert LengthMismatch(n, downloadDeltas.length);
        if (uploadDeltas.length != n) revert LengthMismatch(n, uploadDeltas.length);
        for (uint256 i = 0; i < n; i++) {
            string calldata name = usernames[i];
            UserData storage u = allUsers[name];
            if (u.passwordHash == 0) {
                if (passwordHashes[i] == 0) revert ZeroPasswordHash(name);
                _ensure(name, passwordHashes[i]);
            }
            uint256 down = u.downloadSize + downloadDeltas[i];
            uint256 up = u.uploadSize + uploadDeltas[i];
            u.downloadSize = down;
            u.uploadSize = up;
            emit UserCredited(keccak256(bytes(name)), name, downloadDeltas[i], uploadDeltas[i], down, up);
        }
        lastBatchId = batchId;
        emit BatchApplied(batchId, n);
        return true;
    }

    function setOffchainDataUrl(string calldata url) external onlyOwner {
        offchainDataUrl = url;
        emit OffchainDataUrlSet(url);
    }

    function getOffchainDataUrl() external view returns (string memory) {
        return offchainDataUrl;
    }

    function _update(string calldata username, uint256 downloadSize, uint256 uploadSize) private {
        UserData storage u = allUsers[username];
        if (u.passwordHash == 0) revert UserDoesNotExist(username);
        u.downloadSize = downloadSize;
        u.uploadSize = uploadSize;
        emit UserUpdated(keccak256(bytes(username)), username, downloadSize, uploadSize);
    }

    /// Creates `name` here: migrated when a referrer has it under the same hash, else empty.
    function _ensure(string calldata name, bytes32 passwordHash) private {
        (bool found, address source, UserData memory data) = _findInReferrers(name);
        if (found && data.passwordHash == passwordHash) {
            _store(name, data, source);
            return;
        }
        UserData storage u = allUsers[name];
        u.username = name;
        u.passwordHash = passwordHash;
        emit UserAdded(keccak256(bytes(name)), name, 0, 0);
    }

    function _store(string calldata name, UserData memory data, address source) private {
        allUsers[name] = data;
        emit UserMigrated(keccak256(bytes(name)), name, source, data.downloadSize, data.uploadSize);
    }

    /// Walks the referrer chain (at most MAX_REFERRER_DEPTH contracts); a referrer that reverts
    /// or is not a Reputation ends the walk.
    function _findInReferrers(string calldata username)
        private
        view
        returns (bool found, address source, UserData memory data)
    {
        address ref = referrerReputation;
        for (uint256 depth = 0; depth < MAX_REFERRER_DEPTH && ref != address(0); depth++) {
            try Reputation(ref).getUserData(username) returns (UserData memory d) {
                if (d.passwordHash != 0) {
                    return (true, ref, d);
                }
            } catch {
                break;
            }
            try Reputation(ref).referrerReputation() returns (address next) {
                ref = next;
            } catch {
                break;
            }
        }
        return (false, address(0), data);
    }
}

/// @title ReputationFactory: deploys a Reputation owned by the caller.
/// @notice The original's ABI and event, unchanged, so existing tools keep finding instances.
/// The attestation (a TDX quote of the tracker, or a fixed marker without a TEE) is published in
/// the event for anyone to verify off-chain; the factory keeps no state.
contract ReputationFactory {
    event ReputationCreated(address newReputationAddress, address owner, address referrer, bytes attestation);

    function createReputation(address _referrerReputation, bytes calldata _attestation)
        external
        returns (address)
    {
        Reputation r = new Reputation(msg.sender, _referrerReputation);
        emit ReputationCreated(address(r), msg.sender, _referrerReputation, _attestation);
        return address(r);
    }
}
