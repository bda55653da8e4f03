from django.http import HttpResponse, JsonResponse


def index(request):
    return HttpResponse(f"hello from django at {request.path}")


def form(request):
    """GET shows the form; POST greets the name posted (urlencoded or multipart)."""
    if request.method == "POST":
        size = len(request.body)  # read first: Django parses POST from it then
        return HttpResponse(f"hello {request.POST.get('name', '?')} ({size} bytes)")
    return HttpResponse('<form method="post"><input name="name"></form>')


def where(request):
    return JsonResponse({
        "script_name": request.META["SCRIPT_NAME"],
        "path": request.path,
        "path_info": request.path_info,
        "absolute": request.build_absolute_uri(),
    })


async def async_view(request):
    """An async view: under ASGI it runs on the app's event loop, no thread."""
    import asyncio

    await asyncio.sleep(0)
    return JsonResponse({"async": True, "path": request.path, "script_name": request.META["SCRIPT_NAME"],
                         "method": request.method})
