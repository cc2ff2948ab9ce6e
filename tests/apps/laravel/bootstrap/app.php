<?php
// The application, as Laravel 8's skeleton creates it. The routes are loaded here rather than
// by a RouteServiceProvider, to keep the app small.

spl_autoload_register(function ($class) {
    if (strncmp($class, 'App\\', 4) === 0) {
        require __DIR__.'/../app/'.str_replace('\\', '/', substr($class, 4)).'.php';
    }
});

$app = new Illuminate\Foundation\Application(dirname(__DIR__));

$app->singleton(Illuminate\Contracts\Http\Kernel::class, App\Http\Kernel::class);
$app->singleton(
    Illuminate\Contracts\Debug\ExceptionHandler::class,
    Illuminate\Foundation\Exceptions\Handler::class
);

$app->booted(function ($app) {
    $app['router']->middleware('web')->group(base_path('routes/web.php'));
});

return $app;
