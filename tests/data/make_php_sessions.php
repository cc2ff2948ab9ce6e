<?php
// Makes tests/data/php_sessions.json: session payloads written by real PHP, for the Rust tests
// of unstick's PHP session decoding (CI needs no PHP).
//
// How it was run (from the repository root):
//     apt-get install php-cli       # produced with PHP 8.2 (Debian 12's php8.2-cli)
//     php tests/data/make_php_sessions.php > tests/data/php_sessions.json
//
// Each session is started by PHP's own session extension with the `files` save handler in a
// temporary directory, under both serialize handlers (`php`, the default, and `php_serialize`);
// the file PHP wrote is recorded byte for byte (base64: it can hold NUL and non-UTF-8 bytes).
// `expected` is the JSON the decoder must produce, computed here from the live $_SESSION:
// arrays with keys 0..n-1 are lists, objects are maps of all their properties (visibility
// markers stripped), enum cases are "Class:Case", INF/NAN are null.

enum Plan { case Free; case Pro; }

class User {
    public $id;
    protected $email;
    private $roles;
    public function __construct($id, $email, $roles) {
        $this->id = $id; $this->email = $email; $this->roles = $roles;
    }
}

function expected($value) {
    if ($value instanceof UnitEnum) {
        return get_class($value) . ':' . $value->name;
    }
    if (is_object($value)) {
        $out = [];
        foreach (get_mangled_object_vars($value) as $key => $v) {
            $key = (string) $key;
            if ($key !== '' && $key[0] === "\0") {
                $key = substr($key, strpos($key, "\0", 1) + 1);
            }
            $out[$key] = expected($v);
        }
        return (object) $out;
    }
    if (is_array($value)) {
        $out = [];
        foreach ($value as $key => $v) {
            $out[$key] = expected($v);
        }
        return array_is_list($value) ? $out : (object) $out;
    }
    if (is_float($value) && !is_finite($value)) {
        return null;
    }
    return $value;
}

function write_session($handler, $id, $fill) {
    $dir = sys_get_temp_dir() . '/unstick-php-sessions-' . getmypid();
    @mkdir($dir);
    ini_set('session.save_handler', 'files');
    ini_set('session.save_path', $dir);
    ini_set('session.serialize_handler', $handler);
    ini_set('session.use_cookies', '0');
    ini_set('session.use_strict_mode', '0');
    session_id($id);
    session_start();
    $_SESSION = [];
    $fill();
    $expected = expected($_SESSION);
    session_write_close();
    $file = "$dir/sess_$id";
    $data = file_get_contents($file);
    unlink($file);
    @rmdir($dir);
    return [$data, empty($_SESSION) ? new stdClass() : $expected];
}

$cases = [
    // A typical hand-written login.
    'plain_login' => function () {
        $_SESSION['user_id'] = 42;
        $_SESSION['user'] = 'carol';
        $_SESSION['roles'] = ['user', 'editor'];
        $_SESSION['email'] = 'carol@example.test';
    },
    // Multibyte strings: serialize() counts bytes.
    'multibyte' => function () {
        $_SESSION['user'] = 'zoë-日本-🦀';
        $_SESSION['display'] = ['name' => 'Zoë Ünal', 'city' => 'Zürich'];
    },
    // Objects with every visibility, nested arrays, scalars of each type.
    'object_and_scalars' => function () {
        $_SESSION['auth'] = new User('u-7', 'seven@example.test', ['admin']);
        $_SESSION['flags'] = [3 => true, 7 => false];
        $_SESSION['ratio'] = 0.25;
        $_SESSION['whole'] = 2.0;
        $_SESSION['big'] = PHP_INT_MAX;
        $_SESSION['nothing'] = null;
        $_SESSION['inf'] = INF;
        $_SESSION['text'] = 'a;b"c|d}';
    },
    // Only php_serialize can store a name holding `|` (the php handler refuses to write it).
    'bar_in_name' => function () {
        $_SESSION['a|b'] = 'x';
        $_SESSION['user'] = 'dana';
    },
    // The same object twice (r:) and a PHP reference (R:).
    'references' => function () {
        $user = new User(9, 'nine@example.test', ['user']);
        $_SESSION['current'] = $user;
        $_SESSION['previous'] = $user;
        $_SESSION['name'] = 'nine';
        $_SESSION['alias'] = &$_SESSION['name'];
        $_SESSION['plan'] = Plan::Pro;
    },
    // Laravel-style keys.
    'laravel_like' => function () {
        $_SESSION['_token'] = 'hv8GqYQ2Jq1nTqk7r2Y5b8J2m3k9x0ZzAaBbCcDd';
        $_SESSION['login_web_59ba36addc2b2f9401580f014c7f58ea4e30989d'] = 17;
        $_SESSION['_flash'] = ['old' => [], 'new' => []];
    },
    'empty' => function () {},
];

$sessions = [];
foreach (['php', 'php_serialize'] as $handler) {
    foreach ($cases as $name => $fill) {
        if ($name === 'bar_in_name' && $handler === 'php') {
            continue;
        }
        $id = substr(hash('sha256', "$handler/$name"), 0, 32);
        [$data, $expected] = write_session($handler, $id, $fill);
        $sessions[] = [
            'name' => $name,
            'handler' => $handler,
            'data_base64' => base64_encode($data),
            'expected' => $expected,
        ];
    }
}

echo json_encode(
    ['php_version' => PHP_VERSION, 'sessions' => $sessions],
    JSON_PRETTY_PRINT | JSON_UNESCAPED_UNICODE | JSON_UNESCAPED_SLASHES | JSON_PRESERVE_ZERO_FRACTION
), "\n";
